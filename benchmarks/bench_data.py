"""Data-loading throughput: images per second for PNG and DICOM, with and without the decoded-image cache.

What is timed (single process, no DataLoader workers, so the figures are per core):
  decode       read_image only (file -> float32 HxWx3)
  no cache     ImageDataset(cache=False) + the eval transform (resize 224, centre crop, normalise), one epoch
  memory cold  ImageDataset(cache=True), first epoch (decodes and stores)
  memory warm  same dataset, second epoch (no decoding)
  disk cold    ImageDataset(cache=FOLDER), first run (decodes, writes .npy)
  disk warm    a new ImageDataset on the same FOLDER (a later epoch in another worker, seed or run)
  eval cold    the preprocessed evaluation cache (data/eval_cache.py), empty folder: decode + resize + write
  eval warm    a new dataset on the same cache folder (the next run of a sweep): read the 224 px entry,
               normalise; no decoding, no resizing
Each figure is the best of --repeat passes (the machine is shared; best-of is the least noisy).

Inputs: PNG = real BUSI ultrasound PNGs from ../shared/data when present (else synthetic 256x256 PNGs);
DICOM = synthetic 512x512 12-bit CT slices (rescale + window), uncompressed and JPEG 2000 lossless.

Volumes (``--volumes``): the real DICOM series and NIfTI files of ../shared/data/volumes (else synthetic
series), read as a hospital dataset. Timed: finding + ordering the series from headers (series/s), reading
whole volumes with SimpleITK (series/s, cold: no volume cached), and model inputs through ImageDataset +
eval transform (samples/s) for --slices middle and all with --window lung, cold (first epoch: volumes
decoded) and cached (second epoch: decoded planes from the memory cache).

Usage:
  python benchmarks/bench_data.py --n 200 --repeat 3
  python benchmarks/bench_data.py --volumes --repeat 3
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medclipsvd.data import ImageDataset, Sample, build_transform, read_image

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def png_inputs(n: int, tmp: Path) -> tuple[list[str], str]:
    busi = SHARED / "biomedical" / "BUSI" / "BUSI"
    if busi.is_dir():
        files = sorted(str(p) for p in busi.rglob("*.png"))[:n]
        if len(files) == n:
            return files, "BUSI PNG (real, ~256 px)"
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = tmp / f"png/{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out, "synthetic 256x256 grey PNG"


def dicom_inputs(n: int, tmp: Path, syntax: str | None) -> list[str]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) ** 2 + (xx - 256) ** 2 < 200 ** 2)
    out = []
    for i in range(n):
        arr = (body * 1040 + rng.normal(0, 20, (512, 512))).clip(0, 4095).astype(np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.set_pixel_data(arr, "MONOCHROME2", 12)
        ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, -1024, 40, 400
        if syntax:
            ds.compress(syntax)
        p = tmp / f"dcm-{syntax or 'raw'}/{i}.dcm"
        p.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(p, enforce_file_format=True)
        out.append(str(p))
    return out


def best_rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def measure(files: list[str], repeat: int, tmp: Path) -> dict[str, float]:
    samples = [Sample(f, 0, "x") for f in files]
    tf = build_transform(224, train=False)
    n = len(samples)
    tf(read_image(files[0]))  # warm-up: imports and first-call set-up are not throughput
    res = {"decode": best_rate(lambda: [read_image(f) for f in files], n, repeat)}

    def epoch(ds):
        for i in range(len(ds)):
            ds[i]

    res["no cache"] = best_rate(lambda: epoch(ImageDataset(samples, tf, cache=False)), n, repeat)
    cold, warm = float("inf"), float("inf")
    for _ in range(repeat):
        ds = ImageDataset(samples, tf, cache=True)
        t0 = time.perf_counter(); epoch(ds); cold = min(cold, time.perf_counter() - t0)
        t0 = time.perf_counter(); epoch(ds); warm = min(warm, time.perf_counter() - t0)
    res["memory cold"], res["memory warm"] = n / cold, n / warm
    cold, warm = float("inf"), float("inf")
    for r in range(repeat):
        folder = tmp / f"cache-{r}-{abs(hash(files[0]))}"
        t0 = time.perf_counter(); epoch(ImageDataset(samples, tf, cache=folder)); cold = min(cold, time.perf_counter() - t0)
        t0 = time.perf_counter(); epoch(ImageDataset(samples, tf, cache=folder)); warm = min(warm, time.perf_counter() - t0)
        shutil.rmtree(folder)
    res["disk cold"], res["disk warm"] = n / cold, n / warm
    from medclipsvd.data.eval_cache import PreprocessedDataset, _DIGESTS

    cold, warm = float("inf"), float("inf")
    for r in range(repeat):
        folder = tmp / f"eval-{r}-{abs(hash(files[0]))}"
        _DIGESTS.clear()  # a new process: file hashes are not remembered either
        t0 = time.perf_counter(); epoch(PreprocessedDataset(samples, tf, folder)); cold = min(cold, time.perf_counter() - t0)
        _DIGESTS.clear()
        t0 = time.perf_counter(); epoch(PreprocessedDataset(samples, tf, folder)); warm = min(warm, time.perf_counter() - t0)
        shutil.rmtree(folder)
    res["eval cold"], res["eval warm"] = n / cold, n / warm
    return res


def volume_root(tmp: Path) -> tuple[Path, str]:
    real = SHARED / "volumes"
    if real.is_dir():
        return real, "../shared/data/volumes (4 real DICOM series, 20-48 slices, 3 real NIfTI)"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
    from volume_synth import write_series

    for i in range(6):
        write_series(tmp / "vol" / f"class{i % 2}" / f"p{i}", n=32, rows=256, cols=256, uid=f"1.2.{i}", seed=i)
    return tmp / "vol", "synthetic: 6 series of 32 slices 256x256"


def _clear_volume_caches() -> None:
    from medclipsvd.data.volumes import read, series

    series._folder_groups.cache_clear()
    series._read_header.cache_clear()  # headers are cached per file too: "find + order" parses them again
    read._load.cache_clear()


def measure_volumes(repeat: int, tmp: Path) -> None:
    from medclipsvd.data import load_dataset
    from medclipsvd.data.volumes.read import read_volume
    from medclipsvd.data.volumes.selection import scan_folder

    root, desc = volume_root(tmp)
    print(f"\nvolumes: {desc}")
    scan_t, read_t = float("inf"), float("inf")
    for _ in range(repeat):
        _clear_volume_caches()
        t0 = time.perf_counter(); vols, _ = scan_folder(root); scan_t = min(scan_t, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for v in vols:  # 7 different volumes and a 2-volume cache: every read decodes
            read_volume(v.path)
        read_t = min(read_t, time.perf_counter() - t0)
    n_series = len(vols)
    print(f"| step | series | seconds (best of {repeat}) | series/s |")
    print("|---|---:|---:|---:|")
    print(f"| find + order series (headers) | {n_series} | {scan_t:.2f} | {n_series / scan_t:.1f} |")
    print(f"| read volumes (SimpleITK, cold) | {n_series} | {read_t:.2f} | {n_series / read_t:.1f} |")
    tf = build_transform(224, train=False)
    print(f"\n| --slices (window lung) | samples | cold samples/s | cached samples/s | cold series/s |")
    print("|---|---:|---:|---:|---:|")
    for policy in ("middle", "all"):
        splits = load_dataset("custom", root, slices=policy, window="lung", verify="exists")
        samples = splits.train + splits.val + splits.test
        samples.sort(key=lambda s: (s.path, s.index or 0))  # an epoch in volume order (an eval pass)
        cold, warm = float("inf"), float("inf")
        for _ in range(repeat):
            _clear_volume_caches()
            ds = ImageDataset(samples, tf, cache=True)
            t0 = time.perf_counter(); [ds[i] for i in range(len(ds))]; cold = min(cold, time.perf_counter() - t0)
            t0 = time.perf_counter(); [ds[i] for i in range(len(ds))]; warm = min(warm, time.perf_counter() - t0)
        n = len(samples)
        n_vol = len({s.path for s in samples})
        print(f"| {policy} | {n} | {n / cold:.1f} | {n / warm:.1f} | {n_vol / cold:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="images per input kind")
    ap.add_argument("--repeat", type=int, default=3, help="passes per figure (best is reported)")
    ap.add_argument("--volumes", action="store_true", help="only the volume path (DICOM series / NIfTI)")
    args = ap.parse_args()
    from pydicom.uid import JPEG2000Lossless

    import torch

    torch.set_num_threads(1)
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"Python {platform.python_version()}, torch threads 1")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.volumes:
            measure_volumes(args.repeat, tmp)
            return
        pngs, png_desc = png_inputs(args.n, tmp)
        inputs = {png_desc: pngs,
                  "DICOM 512x512 12-bit, uncompressed": dicom_inputs(args.n, tmp, None),
                  "DICOM 512x512 12-bit, JPEG 2000 lossless": dicom_inputs(args.n, tmp, JPEG2000Lossless)}
        cols = ["decode", "no cache", "memory cold", "memory warm", "disk cold", "disk warm", "eval cold",
                "eval warm"]
        print(f"\nimages/s (n={args.n}, best of {args.repeat}; eval transform to 224 px in every column but decode)")
        print(f"| input | {' | '.join(cols)} |")
        print("|---|" + "---:|" * len(cols))
        for name, files in inputs.items():
            r = measure(files, args.repeat, tmp)
            print(f"| {name} | " + " | ".join(f"{r[c]:.0f}" for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
