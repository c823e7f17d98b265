"""Peak RSS of `medclipsvd predict` on large PNGs (issue 10, item 7: decompression bombs).

Builds a tiny adapter (tiny-biomedclip, random weights, 2 steps on synthetic images), saves it as a local
MLflow model folder, writes a 64x64 PNG, a 10000x10000 grey PNG (~100 KB: the "bomb") and a 10000x10000
RGB PNG, and runs `medclipsvd predict --model FOLDER IMAGE` on each under `/usr/bin/time -f %M`.
The code measured is whichever medclipsvd is first on PYTHONPATH.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/predict_large_png_rss.py --work /tmp/rss
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def cli() -> list[str]:
    return [sys.executable, "-m", "medclipsvd.cli.app"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    import numpy as np
    from PIL import Image

    model = work / "model"
    if not model.exists():
        data = work / "data"
        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            for i in range(6):
                (data / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / c / f"{i}.png")
        subprocess.run([*cli(), "train", "--pipeline", "custom", "--data-root", str(data), "--output",
                        str(work / "run"), "--backbone", "tiny-biomedclip", "--shots", "2", "--max-steps", "2",
                        "--no-mlflow", "--device", "cpu"], check=True, capture_output=True)
        from medclipsvd.tracking.registry import build_model_config, save_pyfunc

        results = json.loads((work / "run" / "results.json").read_text())
        cfg = build_model_config(work / "run" / "adapter", results, "local")
        tmp = work / "modelwork"
        tmp.mkdir(exist_ok=True)
        shutil.move(str(save_pyfunc(cfg, work / "run" / "adapter", tmp)), model)
    images = {"64x64 RGB": (64, "RGB"), "10000x10000 grey": (10000, "L"), "10000x10000 RGB": (10000, "RGB")}
    for name, (side, mode) in images.items():
        p = work / f"{side}_{mode}.png"
        if not p.exists():
            Image.new(mode, (side, side), 90 if mode == "L" else (30, 60, 90)).save(p)
        proc = subprocess.run(["/usr/bin/time", "-f", "RSS %M", *cli(), "predict", "--model", str(model), str(p)],
                              capture_output=True, text=True, env=dict(os.environ))
        rss = [l for l in proc.stderr.splitlines() if l.startswith("RSS ")]
        peak = int(rss[-1].split()[1]) / 1024 if rss else float("nan")
        err = [l for l in (proc.stdout + proc.stderr).splitlines() if l.startswith(("error:", "Traceback"))]
        print(f"{name:18s} file {p.stat().st_size / 1024:7.0f} KB  exit {proc.returncode}  peak RSS {peak:7.0f} MB"
              + (f"  ({err[0][:80]})" if err else ""), flush=True)


if __name__ == "__main__":
    main()
