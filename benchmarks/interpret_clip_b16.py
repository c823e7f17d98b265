"""Runtime of `medclipsvd interpret` for a full-size CLIP ViT-B/16 adapter with 256 images on CPU.

Setup (not timed as part of the target): load_backbone("clip-vit-b16", random_init=True), adapt with the
paper preset, perturb σ (seeded log-normal noise everywhere plus a stronger change in two vision layers),
save_adapter. Then the real CLI runs as a subprocess, timed end to end, with an empty SVD cache (cold:
the adapter's SVDs are recomputed) and, with --warm, once more with that cache filled.

    .venv/bin/python benchmarks/interpret_clip_b16.py [--images DIR] [--n-images 256] [--warm]

Images: --images DIR, else ../shared/data/biomedical/BUSI/BUSI when present, else 256 synthetic PNGs.
Prints the measured figures with the command lines that produced them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSI = REPO / ".." / "shared" / "data" / "biomedical" / "BUSI" / "BUSI"


def make_adapter(work: Path) -> tuple[Path, float]:
    import torch

    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import adapt, adapted_modules, save_adapter, sigma_parameters

    t0 = time.perf_counter()
    bb = adapt(load_backbone("clip-vit-b16", random_init=True), "paper", cache_dir=False)
    g = torch.Generator().manual_seed(0)
    infos = adapted_modules(bb)
    with torch.no_grad():
        for name, p in sigma_parameters(bb).items():
            p.mul_(torch.exp(0.02 * torch.randn(p.shape, generator=g)))
            if infos[name].tower == "vision" and infos[name].layer in (9, 11) and infos[name].matrix in ("v", "o"):
                p[:64].mul_(1.5)
    path = save_adapter(bb, work / "adapter", extra={"benchmark": "random-init clip-vit-b16, perturbed σ"})
    return path, time.perf_counter() - t0


def make_images(work: Path, n: int) -> Path:
    from PIL import Image
    import numpy as np

    folder = work / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def run_cli(adapter: Path, images: Path, n: int, out: Path, cache: Path, precision: str
            ) -> tuple[float, float, dict, str]:
    cmd = [str(REPO / ".venv" / "bin" / "medclipsvd"), "interpret", "--adapter", str(adapter), "--images", str(images),
           "--max-images", str(n), "--output", str(out), "--precision", precision, "--no-mlflow"]
    env = {**os.environ, "MEDCLIPSVD_CACHE": str(cache)}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"interpret failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return wall, cpu, summary, f"MEDCLIPSVD_CACHE={cache} " + " ".join(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--warm", action="store_true", help="also run with the SVD cache filled by the first run")
    ap.add_argument("--warm-only", action="store_true",
                    help="only run with the SVD cache in <work>/svd-cache (filled by an earlier run, e.g. training)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="passed to the CLI (image forward passes)")
    ap.add_argument("--adapter", type=Path, default=None, help="reuse an adapter made by an earlier run")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()

    import torch

    work = args.work or Path(tempfile.mkdtemp(prefix="interpret-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads; load average {os.getloadavg()}")
    if args.adapter:
        adapter = args.adapter
    else:
        adapter, setup_s = make_adapter(work)
        print(f"setup (load random-init clip-vit-b16 + adapt + perturb σ + save_adapter): {setup_s:.1f} s")
    images = args.images or (BUSI if BUSI.is_dir() else make_images(work, args.n_images))
    cache = work / "svd-cache"
    stamp = time.strftime("%H%M%S")
    # The cold run gets an empty cache of its own and leaves it filled for the warm run.
    runs = [] if args.warm_only else [("cold SVD cache", work / f"report-cold-{stamp}", work / f"svd-cache-{stamp}")]
    if args.warm or args.warm_only:
        runs.append(("warm SVD cache", work / f"report-warm-{stamp}", runs[0][2] if runs else cache))
    for label, out, cache in runs:
        load_before = os.getloadavg()
        wall, cpu, summary, cmd = run_cli(adapter, images, args.n_images, out, cache, args.precision)
        phases = ", ".join(f"{k} {v:.1f}" for k, v in summary["timings_s"].items())
        print(f"\n[{label}] {summary['n_images']} images, images from {images}")
        print(f"  command: {cmd}")
        print(f"  wall time: {wall:.1f} s ({'under' if wall < 300 else 'OVER'} the 5-minute target); "
              f"CPU time {cpu:.1f} s; precision {summary.get('precision')}; load average before {load_before}, "
              f"after {os.getloadavg()}")
        print(f"  phases (s): {phases}")
        print(f"  report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
