"""``python -m tools.sweep``: run the bad-input sweep (see tools/sweep/__init__.py and docs/reliability-sweep.md).

Exit status: 0 when no case shows a code execution, a traceback/hang or a silently wrong result (issue 16's
acceptance) and every case could be built, 1 otherwise, 2 for a usage error."""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="input classes to run, comma-separated (see --list); default: all")
    p.add_argument("--case", action="append", default=[],
                   help="case ids or glob patterns (repeatable), e.g. --case 'adapter-sigma-*'")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--list", action="store_true", help="list the cases (id, class, expected, why) and exit")
    p.add_argument("--report", default="/tmp/medclipsvd-sweep/report.json",
                   help="per-case JSON report (a Markdown summary is written beside it, .md)")
    p.add_argument("--workdir", default=None,
                   help="where cases build their files (default: a 'work' folder beside the report); "
                        "emptied first, kept afterwards for inspection")
    p.add_argument("--skip-slow", action="store_true", help="leave out the cases that train/evaluate a model")
    p.add_argument("--table-from", metavar="REPORT", help="print the summary table of an earlier JSON report and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tools.sweep.cases import CLASS_ORDER, all_cases

    if args.table_from:
        import json

        from tools.sweep.report import markdown

        doc = json.loads(Path(args.table_from).read_text())
        print(markdown(doc["cases"], CLASS_ORDER, doc.get("seconds", 0.0)))
        return 0
    cases = all_cases()
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = wanted - set(CLASS_ORDER)
        if unknown:
            print(f"error: unknown class(es) {sorted(unknown)}; classes: {', '.join(CLASS_ORDER)}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.klass in wanted]
    if args.case:
        cases = [c for c in cases if any(fnmatch.fnmatch(c.id, pat) for pat in args.case)]
    if args.skip_slow:
        cases = [c for c in cases if not c.slow]
    if args.list:
        for c in cases:
            tags = ("  [slow]" if c.slow else "") + (f"  item {c.item}" if c.item else "")
            print(f"{c.id}\t{c.klass}\texpect {'/'.join(sorted(c.expect))}{tags}\n    {c.what}\n    why: {c.why}")
        by = {k: sum(1 for c in cases if c.klass == k) for k in CLASS_ORDER}
        print(f"\n{len(cases)} cases: " + ", ".join(f"{k} {n}" for k, n in by.items() if n))
        return 0
    if not cases:
        print("error: no case selected", file=sys.stderr)
        return 2

    import shutil

    from tools.sweep.report import acceptance, summary_table, write_report
    from tools.sweep.runner import run_sweep

    report = Path(args.report).expanduser().absolute()
    workdir = Path(args.workdir).expanduser().absolute() if args.workdir else report.parent / "work"
    if workdir.exists():
        shutil.rmtree(workdir)
    t0 = time.monotonic()
    print(f"{len(cases)} cases, {args.jobs} worker(s); files under {workdir}", flush=True)
    results = run_sweep(cases, workdir, REPO, jobs=args.jobs, progress=lambda m: print(m, flush=True))
    seconds = time.monotonic() - t0
    path = write_report(report, results, CLASS_ORDER, seconds, sys.argv)
    acc = acceptance(results)
    print()
    print(summary_table(results, CLASS_ORDER))
    print(f"\n{acc['code executions']} code executions, {acc['tracebacks/hangs']} tracebacks/hangs, "
          f"{acc['silently wrong']} silently wrong; {acc['passing']}/{acc['cases']} cases pass "
          f"({seconds / 60:.1f} min)")
    print(f"report: {path} (and {path.with_suffix('.md')})")
    if acc["sweep errors"]:
        print(f"{acc['sweep errors']} case(s) could not be built (sweep errors): they test nothing; see the report")
    bad = acc["code executions"] + acc["tracebacks/hangs"] + acc["silently wrong"] + acc["sweep errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
