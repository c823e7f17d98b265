"""One real run end to end, timed: `medclipsvd train ARGS...` executed in this process (the same code path
as the command line: data check, few-shot subset, backbone, σ adaptation, training, saving, merging,
test-set evaluation, plots), plus the figures the command does not print: wall time, peak GPU memory
(torch.cuda.max_memory_allocated) and the trainer's step time and images/s from results.json.

    python benchmarks/bench_run.py -- --pipeline breast_ultrasound --data-root ../shared/data/biomedical \\
        --backbone clip-vit-b16 --random-init --shots 16 --seed 1 --no-mlflow --output runs/gpu-busi
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> dict:
    import torch

    from medclipsvd.cli.app import app

    args = [a for a in argv if a != "--"]
    out = Path(args[args.index("--output") + 1]) if "--output" in args else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        app(["train", *args], standalone_mode=False)
    except SystemExit as exc:  # typer's exit after a handled error
        if exc.code:
            raise
    wall = time.perf_counter() - t0
    res = json.loads((out / "results.json").read_text()) if out else {}
    tr = res.get("train", {})
    report = {
        "command": "medclipsvd train " + " ".join(shlex.quote(a) for a in args),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "wall_seconds": round(wall, 1), "precision": res.get("precision"),
        "train_steps": tr.get("steps"), "train_seconds": tr.get("seconds"),
        "seconds_per_step": round(tr["seconds"] / tr["steps"], 4) if tr.get("steps") else None,
        "train_images_per_second": tr.get("images_per_second"),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "test_accuracy": res.get("summary", {}).get("test"),
        "n_test": res.get("eval", {}).get("test", {}).get("n"),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
