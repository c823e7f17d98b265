"""`medclipsvd data check` on a long CSV: the seconds a listing of N rows costs before any image is decoded.

The issue-16 sweep's `csv-many-rows-check` case: a CSV of 200,000 rows (6 MB) naming files that do not exist.
Every row is parsed, confined to the data root (symlinks out refused), looked up on disk, split and reported;
the command fails ("missing") and the time is what a user waits for that answer. With --present the rows name
files that exist (small files in 16 folders, checked at --verify exists: no header is read), so the per-file
work on real entries is timed too.

What is timed: `medclipsvd.cli.app.run([...])` in this process (the CLI's imports come first, untimed), best of
--repeat runs: wall-clock seconds and the process's CPU seconds (threads included). Runs on a CPU; the machine's
load moves the wall-clock figure (the line says how many cores and the load average).

Usage:
  python benchmarks/bench_csv_check.py                 # 200,000 missing files
  python benchmarks/bench_csv_check.py --rows 50000 --present --repeat 3
  python benchmarks/bench_csv_check.py --profile       # cProfile's top 25 by cumulative time, one run
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

CLASSES = ("benign", "malignant")


def write_csv(folder: Path, rows: int, present: bool) -> Path:
    data = folder / "data"
    data.mkdir(parents=True)
    lines = ["path,label,split"]
    for i in range(rows):
        rel = f"img/{CLASSES[i % 2]}{i % 8}/x{i}.png" if present else f"img/x{i}.png"
        if present:
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).write_bytes(str(i).encode())  # --verify exists: present, not empty, each its own
        lines.append(f"{rel},{CLASSES[i % 2]},{('train', 'train', 'train', 'val', 'test')[i % 5]}")
    csv = data / "export.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def run_check(csv: Path, present: bool) -> tuple[float, float, int, str]:
    from medclipsvd.cli.app import run

    argv = ["data", "check", "--pipeline", "custom", "--data-root", str(csv), "--json", str(csv.parent.parent / "report.json")]
    if present:
        argv += ["--verify", "exists"]
    out, err = io.StringIO(), io.StringIO()
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(argv)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    last = next((l.strip() for l in reversed((out.getvalue() + err.getvalue()).splitlines()) if l.strip()), "")
    return seconds, cpu, code, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--present", action="store_true", help="rows name files that exist (empty files)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 25 (cumulative) of one run")
    args = parser.parse_args()

    import medclipsvd.cli.app  # noqa: F401 - the imports are not what is timed

    with tempfile.TemporaryDirectory(prefix="bench-csv-check-") as tmp:
        csv = write_csv(Path(tmp), args.rows, args.present)
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            run_check(csv, args.present)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            return
        runs = [run_check(csv, args.present) for _ in range(args.repeat)]
        seconds, cpu, code, last = min(runs)
        what = "present (--verify exists)" if args.present else "missing"
        print(f"data check, CSV of {args.rows:,} rows naming {what} files: best {seconds:.2f} s wall "
              f"({cpu:.2f} s CPU) of {len(runs)} (exit {code}; {os.cpu_count()} cores, load "
              f"{os.getloadavg()[0]:.1f}; last line: {last[:80]})")


if __name__ == "__main__":
    main()
