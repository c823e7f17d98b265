"""Start-up time of CLI commands: wall and CPU time (user + system) of fresh `python -m medclipsvd ...` processes.

On a shared, noisy machine wall time swings with the load; CPU time is the stable figure, and the best of
several runs the fair one. Compare two source trees in one run (interleaved) with --tree A --tree B.

    python benchmarks/bench_startup.py --repeat 3
    python benchmarks/bench_startup.py --tree /path/old --tree . --command "data list" --command "--help"
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import time

DEFAULT_COMMANDS = ["--help", "data list", "pipelines", "backbones"]


def measure(tree: str | None, command: str) -> tuple[float, float]:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "medclipsvd", *shlex.split(command)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"`medclipsvd {command}` failed: {out.stderr[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--command", action="append", help="CLI arguments, e.g. 'data list' (repeatable)")
    parser.add_argument("--tree", action="append", help="source tree put on PYTHONPATH (repeatable; default: "
                                                        "the installed medclipsvd)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees = args.tree or [None]
    results: dict[tuple[str, str | None], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for command in args.command or DEFAULT_COMMANDS:
            for tree in trees:
                results.setdefault((command, tree), []).append(measure(tree, command))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    print("| command | tree | best wall s | median wall s | best CPU s |")
    print("|---|---|---|---|---|")
    for (command, tree), runs in results.items():
        walls = sorted(w for w, _ in runs)
        print(f"| `medclipsvd {command}` | {tree or 'installed'} | {walls[0]:.2f} | {walls[len(walls) // 2]:.2f} | "
              f"{min(c for _, c in runs):.2f} |")


if __name__ == "__main__":
    main()
