"""Our DICOM series reader against SimpleITK's own series read, per series (issue 18: "the reader stays within
1.3x of SimpleITK's own series read time").

  simpleitk  what SimpleITK does by itself: ``GetGDCMSeriesFileNames(folder)`` (GDCM parses and sorts the
             files) + ``ImageSeriesReader.Execute()`` + ``GetArrayFromImage`` - pixels in hand
  ours       ``read_volume(folder)`` as a training epoch calls it: the headers were read when the dataset
             was listed (cached per file state), the volume is not cached - ordering and geometry
             checks, the SimpleITK read, resampling when the stack is irregular or tilted, reorientation to
             LPS and the float32 array
  ours cold  the same with the header cache cleared too: the first read of a folder never listed before
             (every header is read: series grouping, 4-D phases, split parts - by GDCM's Scanner, pydicom
             for the files it cannot give identically; volumes/gdcm_headers.py)
  pydicom    ours cold with MEDCLIPSVD_GDCM_HEADERS=0: every header read by pydicom (the reader without
             python-gdcm)

A second table times the header scan alone, per file: GDCM's inside SimpleITK (``GetGDCMSeriesFileNames``)
against ours (``series.folder_groups`` with its caches cleared, the tags converted to headers), through the
Scanner and with pydicom alone.

Both run in one process, interleaved (simpleitk, ours, simpleitk, ours ...), so the OS file cache is warm for
both and the machine's load hits both alike; each figure is the best of --repeat passes. Inputs: the real
DICOM series of ../shared/data/volumes (skipped when absent), and synthetic 512x512 series of 40 slices
written here - a regular one, a gantry-tilted one and one with variable spacing (the two that are resampled).

Usage:
  python benchmarks/bench_series_read.py --repeat 5
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared" / "data" / "volumes"


def _sitk_read(folder: str) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder))
    return sitk.GetArrayFromImage(reader.Execute())


def _ours_cold(folder: str) -> np.ndarray:
    from medclipsvd.data.volumes import read, series
    from medclipsvd.data.volumes.read import read_volume

    series._folder_groups.cache_clear()
    series._read_header.cache_clear()
    read._load.cache_clear()
    return read_volume(folder).array


def _pydicom_only(fn):
    from medclipsvd.data.volumes.gdcm_headers import GDCM_ENV

    def run(folder: str):
        os.environ[GDCM_ENV] = "0"
        try:
            return fn(folder)
        finally:
            del os.environ[GDCM_ENV]
    return run


def _ours(folder: str) -> np.ndarray:
    from medclipsvd.data.volumes import read
    from medclipsvd.data.volumes.read import read_volume

    read._load.cache_clear()  # the headers stay as the dataset listing left them; the volume is decoded
    return read_volume(folder).array


def _gdcm_scan(folder: str):
    import SimpleITK as sitk

    return sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder)


def _ours_headers(folder: str):
    from medclipsvd.data.volumes import series

    series._folder_groups.cache_clear()
    series._read_header.cache_clear()
    return series.folder_groups(folder)


def _synthetic(tmp: Path) -> list[tuple[str, str]]:
    sys.path.insert(0, str(HERE.parent / "tests" / "data"))
    from volume_synth import write_slice

    rng = np.random.default_rng(0)
    out = []
    for name, zs, tilt in (("synthetic regular", [2.0 * j for j in range(40)], 0.0),
                           ("synthetic tilted (resampled)", [2.0 * j for j in range(40)], 0.35),
                           ("synthetic 2 mm then 5 mm (resampled)",
                            [2.0 * j for j in range(20)] + [38.0 + 5.0 * j for j in range(1, 21)], 0.0)):
        d = tmp / name.split()[1]
        for j, z in enumerate(zs):
            hu = rng.integers(-1024, 2000, (512, 512)).astype(np.float64)
            write_slice(d / f"IMG{j:03d}.dcm", hu, (0.0, j * tilt, z), uid=f"1.2.826.0.1.77.{len(out)}",
                        spacing=(0.7, 0.7))
        out.append((name, str(d)))
    return out


def timed(fn, folder: str, times: list[float]) -> None:
    t0 = time.perf_counter()
    fn(folder)
    times.append(time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="passes per figure (best is reported)")
    args = ap.parse_args()
    import SimpleITK as sitk

    from medclipsvd.data.volumes.gdcm_headers import GDCM_ENV, enabled

    os.environ.pop(GDCM_ENV, None)
    print(f"python {platform.python_version()}, SimpleITK {sitk.Version_VersionString()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, headers through GDCM's Scanner: {enabled()}")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [(p.name, str(p)) for p in sorted(SHARED.glob("*_series_*"))] if SHARED.is_dir() else []
        inputs += _synthetic(Path(tmp))
        print("| series | slices | SimpleITK s | ours s | ours / SimpleITK | ours cold s | cold / SimpleITK "
              "| cold, pydicom only / SimpleITK |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        tot = np.zeros(4)
        for name, folder in inputs:
            ts, to, tc, tp = [], [], [], []
            first = _ours_cold(folder)  # lists the headers once, as loading the dataset does
            assert np.array_equal(first, _pydicom_only(_ours_cold)(folder)), name
            for _ in range(args.repeat):
                timed(_sitk_read, folder, ts)
                timed(_ours, folder, to)
                timed(_ours_cold, folder, tc)
                timed(_pydicom_only(_ours_cold), folder, tp)
            s, o, c, p = min(ts), min(to), min(tc), min(tp)
            tot += (s, o, c, p)
            n = len([f for f in os.listdir(folder) if not f.startswith(".")])
            print(f"| {name} | {n} | {s:.3f} | {o:.3f} | {o / s:.2f} | {c:.3f} | {c / s:.2f} | {p / s:.2f} |")
        print(f"| all | | {tot[0]:.3f} | {tot[1]:.3f} | {tot[1] / tot[0]:.2f} | {tot[2]:.3f} | {tot[2] / tot[0]:.2f} "
              f"| {tot[3] / tot[0]:.2f} |")
        print()
        print("| series | header scan: SimpleITK's GDCM ms/file | ours (Scanner) ms/file | ours / SimpleITK's "
              "| pydicom only ms/file | pydicom only / ours |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, folder in inputs:
            tg, th, tp = [], [], []
            for _ in range(args.repeat):
                timed(_gdcm_scan, folder, tg)
                timed(_ours_headers, folder, th)
                timed(_pydicom_only(_ours_headers), folder, tp)
            n = len([f for f in os.listdir(folder) if not f.startswith(".")])
            g, h, p = min(tg) * 1000 / n, min(th) * 1000 / n, min(tp) * 1000 / n
            print(f"| {name} | {g:.2f} | {h:.2f} | {h / g:.1f} | {p:.2f} | {p / h:.1f} |")
        print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
