"""Mutation testing of the core with mutmut 3: one target at a time, each against the few tests that cover it.

Not part of the test suite or CI (a full pass takes tens of minutes). mutmut is not a project dependency:
install it into a separate environment that sees the project's packages, e.g.

    python -m venv /tmp/mutvenv && /tmp/mutvenv/bin/pip install mutmut
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/mutvenv/lib/python3.11/site-packages/zz_project.pth
    /tmp/mutvenv/bin/python tools/mutation.py schedule windows      # or no names: every target

For each target a scratch copy of the repository (medclipsvd/, tests/, pyproject.toml with a generated
``[tool.mutmut]`` section) is made under --work, so the work tree is never mutated; mutmut then mutates the
target's file(s), runs the mapped tests once to learn which test reaches which function, and runs each
mutant against those tests only (forked from a warm process: seconds per mutant). The result per target
(killed / survived / timeout / no tests) is printed as a Markdown row and written to <work>/<target>.json;
survivors are listed with `mutmut show` diffs in <work>/<target>.survivors.txt. docs/mutation.md has the
latest table and what each survivor means."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# target -> (files to mutate, mutant name patterns (fnmatch; empty: all of the files), tests that cover it).
# Tests must run in-process (mutmut selects the mutant by an environment variable inside its own forks):
# no CLI subprocesses, no DDP workers.
TARGETS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "schedule": (["medclipsvd/engine/schedule.py"], [], ["tests/engine/test_schedule.py"]),
    "windows": (["medclipsvd/data/volumes/windows.py"], [],
                ["tests/data/test_windows.py"] + [f"tests/data/test_volumes.py::{t}" for t in (
                    "test_window_values_exact", "test_window_presets_are_the_documented_ones",
                    "test_hu_window_values_at_1e6", "test_multi_window_channels_and_auto")]),
    "dicom-window": (["medclipsvd/data/readers/dicom.py"],
                     ["medclipsvd.data.readers.dicom.x_apply_window__mutmut_*", "medclipsvd.data.readers.dicom.x__window__mutmut_*",
                      "medclipsvd.data.readers.dicom.x__rescale__mutmut_*", "medclipsvd.data.readers.dicom.x__first__mutmut_*"],
                     ["tests/data/test_dicom.py", "tests/data/test_dicom_corpus.py"]),
    "fewshot": (["medclipsvd/data/fewshot.py"], [], ["tests/data/test_fewshot.py", "--deselect",
                                                     "tests/data/test_fewshot.py::test_warnings_point_at_the_callers_line"]),
    "confine": (["medclipsvd/data/sources/confine.py"], [], ["tests/data/test_confine.py"]),
    "clinical": (["medclipsvd/engine/clinical.py"], [], ["tests/engine/test_clinical.py"]),
    "metrics": (["medclipsvd/engine/metrics.py"], [], ["tests/engine/test_metrics.py", "tests/engine/test_clinical.py"]),
    "trainer-loss": (["medclipsvd/engine/trainer.py"],
                     ["medclipsvd.engine.trainer.x_train__mutmut_*", "medclipsvd.engine.trainer.x__global_mean_loss__mutmut_*"],
                     ["tests/engine/test_trainer_fast.py", "tests/engine/test_trainer_devices_fast.py"]),
    # svd/, adapter files and the trainer's loss: fast tests on toy modules only (tiny-clip's tests take seconds
    # each, too slow to run per mutant on a shared 2-core machine)
    "svd-layers": (["medclipsvd/svd/layers.py", "medclipsvd/svd/decompose.py"], [],
                   ["tests/svd/test_layers_fast.py", "tests/svd/test_decompose_fast.py", "tests/svd/test_cost_model.py"]),
    "svd-targets": (["medclipsvd/svd/targets.py", "medclipsvd/svd/adapt.py", "medclipsvd/backbones/fingerprint.py"], [],
                    ["tests/svd/test_targets_fast.py", "tests/backbones/test_fingerprint_fast.py"]),
    "adapter-io": (["medclipsvd/svd/adapter_io.py"], [], ["tests/svd/test_adapter_io_fast.py"]),
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def _scratch(target: str, work: Path) -> Path:
    files, _, tests = TARGETS[target]
    where = work / target
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "medclipsvd", where / "medclipsvd", ignore=ignore)
    shutil.copytree(REPO / "tests", where / "tests", ignore=ignore)
    config = {
        "source_paths": ["medclipsvd"],
        "only_mutate": files,
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-n", "0"],  # mutmut forks its own workers
        "timeout_multiplier": 5.0,
        "timeout_constant": 10.0,
        "use_git_change_detection": False,
    }
    toml = "\n[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    (where / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + toml)
    return where


def _results(where: Path, patterns: list[str]) -> dict[str, str]:
    import fnmatch

    out = {}
    for meta in (where / "mutants").rglob("*.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if not patterns or any(fnmatch.fnmatch(name, p) for p in patterns):
                out[name] = STATUS.get(code, "suspicious")
    return out


def _mutant_diffs(where: Path) -> dict[str, str]:
    """Mutant name -> unified diff against its original function, read from mutmut's generated files (one
    pass, instead of a `mutmut show` process per mutant)."""
    import ast
    import difflib

    out = {}
    for meta in (where / "mutants").rglob("*.py.meta"):
        py = meta.with_suffix("")
        source = py.read_text()
        lines = source.splitlines()
        module = ".".join(py.relative_to(where / "mutants").with_suffix("").parts)
        funcs = {n.name: "\n".join(lines[n.lineno - 1:n.end_lineno]) for n in ast.walk(ast.parse(source))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for name, text in funcs.items():
            stem, sep, number = name.rpartition("__mutmut_")
            if not sep or not number.isdigit() or f"{stem}__mutmut_orig" not in funcs:
                continue
            orig = funcs[f"{stem}__mutmut_orig"].replace(f"{stem}__mutmut_orig", stem).splitlines()
            new = text.replace(name, stem).splitlines()
            out[f"{module}.{name}"] = "\n".join(l for l in difflib.unified_diff(orig, new, lineterm="", n=1)
                                                 if not l.startswith(("---", "+++")))
    return out


def run_target(target: str, work: Path, children: int, timeout: float) -> dict:
    files, patterns, tests = TARGETS[target]
    where = _scratch(target, work)
    t0 = time.monotonic()
    log = (work / f"{target}.log").open("w")
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *patterns]
    try:
        # mutmut forks every mutant from a process that has already run the tests: an OpenMP thread pool
        # started there leaves the forked children waiting forever on its locks (each mutant then ends as a
        # timeout), so torch runs single-threaded unless the caller says otherwise
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, cwd=where, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    status = _results(where, patterns)
    counts = Counter(status.values())
    survivors = sorted(n for n, s in status.items() if s in ("survived", "no tests", "suspicious", "not checked"))
    diffs = _mutant_diffs(where)
    with (work / f"{target}.survivors.txt").open("w") as fh:
        for name in survivors:
            fh.write(f"## {name}: {status[name]}\n{diffs.get(name, '(no diff found)')}\n")
    total = len(status)
    live = sum(counts[s] for s in ("survived", "no tests", "suspicious", "not checked"))
    result = {"target": target, "files": files, "functions": patterns or "all", "tests": tests,
              "mutants": total, **{k: counts[k] for k in ("killed", "timeout", "survived", "no tests")},
              "surviving_percent": round(100.0 * live / total, 1) if total else None,
              "minutes": round((time.monotonic() - t0) / 60, 1), "mutmut_exit": rc,
              "date": dt.date.today().isoformat(), "survivors": survivors}
    (work / f"{target}.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medclipsvd-mutation"))
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutants (mutmut's --max-children)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for one target's whole run")
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    print("| target | mutants | killed | timeout | survived | no tests | surviving % | minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for target in args.targets or list(TARGETS):
        r = run_target(target, args.work, args.max_children, args.timeout)
        print(f"| {target} | {r['mutants']} | {r['killed']} | {r['timeout']} | {r['survived']} | {r['no tests']} "
              f"| {r['surviving_percent']} | {r['minutes']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
