"""Images, DICOM and NIfTI that are damaged, lie about their size, or are no files at all, met by `data check`
(the image in a class folder), `predict` (the image given directly) and `train` (for the memory bombs).
Every DICOM carries fake patient tags: no output may show them."""
from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path

import numpy as np

from ..core import DATA_CHECK_FAILED, ACCEPT, ANY_SAFE, ERROR, REFUSE_OR_WARN, Case, Run
from ..fixtures import PHI, class_folders, dicom, fifo, nifti, png, raw_png, symlink, write
from .common import FAST, predict_run, run_dir, train_check

KLASS = "images"


def _check_total(rep: Path, total: int):
    def check(ctx, res):
        if not rep.is_file():
            return f"no report {rep}"
        rows = json.loads(rep.read_text()).get("rows", [])
        got = sum(r["present"] for r in rows)
        return None if got == total else f"{got} images present in the report, expected {total}"

    return check


def check_route(ctx, make, expect, *extra) -> Run:
    d = class_folders(ctx.root / "data")
    make(ctx, d / "benign")
    rep = ctx.root / "report.json"
    return Run(["data", "check", "-d", "custom", "-r", str(d), "--json", str(rep), *extra],
               check=_check_total(rep, 13), keep=[d], secrets=list(PHI), report_failed=DATA_CHECK_FAILED)


def predict_route(ctx, make, expect, *extra) -> Run:
    run = run_dir(ctx)
    folder = ctx.root / "inputs"
    folder.mkdir()
    target = make(ctx, folder)
    return predict_run(ctx, run / "adapter", [target], *extra, secrets=list(PHI))


def train_route(ctx, make, expect, *extra) -> Run:
    d = class_folders(ctx.root / "data")
    make(ctx, d / "benign")
    out = ctx.root / "out"
    return Run(["train", "--pipeline", "custom", "--data-root", str(d), "--output", str(out), *FAST, "--shots", "6",
                *extra], check=train_check(out), keep=[d], secrets=list(PHI))


ROUTES = {"check": check_route, "predict": predict_route, "train": train_route}


def _cases(cid, what, why, expect, make, routes=("check",), item="", warn=(), timeout=90.0,
           extra=()) -> list[Case]:
    """``make(ctx, folder) -> path`` writes the input into ``folder`` and returns it."""
    out = []
    for route in routes:
        def build(ctx, route=route):
            r = ROUTES[route](ctx, make, expect, *extra)
            r.warn_mentions = list(warn)
            return r

        out.append(Case(f"img-{cid}-{route}", KLASS, f"{what} ({route})", why, expect, build,
                        needs=("run",) if route == "predict" else (), timeout=timeout, item=item,
                        slow=route != "check"))
    return out


def _bytes(name: str, make_bytes):
    return lambda ctx, folder: write(folder / name, make_bytes(ctx))


def _pil(name: str, fmt: str, mode: str = "RGB", size=(32, 32), arr=None, **save):
    def make(ctx, folder):
        from PIL import Image

        rng = np.random.default_rng(7)
        data = arr if arr is not None else rng.integers(0, 256, (size[1], size[0], len(mode)) if len(mode) > 1 else
                                                        (size[1], size[0]), dtype=np.uint8)
        img = Image.fromarray(data) if mode in ("F", "I;16") or arr is not None else Image.fromarray(data, mode=mode)
        if img.mode != mode and mode not in ("F", "I;16"):
            img = img.convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt, **save)
        return write(folder / name, buf.getvalue())

    return make


def _dcm(name: str = "scan.dcm", cut: int | None = None, **tags):
    def make(ctx, folder):
        p = dicom(folder / name, **tags)
        if cut is not None:
            p.write_bytes(p.read_bytes()[:cut])
        return p

    return make


def _dcm_bytes(name: str, fn):
    def make(ctx, folder):
        p = dicom(folder / name)
        p.write_bytes(fn(p.read_bytes()))
        return p

    return make


CASES: list[Case] = []
add = CASES.extend

WHY_BAD = "an image that cannot be decoded: one line naming the file (and --allow-missing)"
WHY_BOMB = ("item 6: the sides and aspect ratio are bounded before decoding (a 138-byte 1x60000 PNG needs ~36 GB "
            "to resize): one clear line, no memory blow-up")
add(_cases("truncated-png", "PNG cut in half (header intact)", WHY_BAD, ERROR,
           lambda ctx, f: write(f / "cut.png", png(ctx.root / "tmp.png", seed=3, size=64).read_bytes()[:300]),
           routes=("check", "predict")))
add(_cases("tall-1x60000", "PNG of 1x60000 pixels (a few hundred bytes)", WHY_BOMB, ERROR,
           _bytes("tall.png", lambda ctx: raw_png(1, 60000)), routes=("check", "predict", "train"), item="6",
           timeout=120))
add(_cases("wide-60000x1", "PNG of 60000x1 pixels", WHY_BOMB, ERROR, _bytes("wide.png", lambda ctx: raw_png(60000, 1)),
           item="6", timeout=120))
add(_cases("ihdr-65535", "PNG header claiming 65535x65535 with 100 bytes of data",
           "the header alone must not allocate 4 GB: one clear line (decompression-bomb limit)", ERROR,
           _bytes("huge.png", lambda ctx: raw_png(65535, 65535, rows=zlib.compress(b"\0" * 100))), timeout=120,
           routes=("check", "predict")))
add(_cases("zero-bytes", "an empty .png file", WHY_BAD, ERROR, _bytes("empty.png", lambda ctx: b"")))
add(_cases("text-as-png", "a text file named .png", WHY_BAD, ERROR, _bytes("note.png", lambda ctx: "hello\n" * 50)))
add(_cases("svg-as-png", "an SVG named .png", WHY_BAD, ERROR,
           _bytes("vec.png", lambda ctx: '<svg xmlns="http://www.w3.org/2000/svg"/>'), routes=("check",)))
add(_cases("jpeg-as-png", "a valid JPEG named .png", "the decoder reads the bytes, not the name: accepted",
           ACCEPT, _pil("photo.png", "JPEG"), routes=("predict",)))
add(_cases("gif-as-png", "a GIF named .png", "a decodable image: accepted, or one clear line", ANY_SAFE,
           _pil("anim.png", "GIF", mode="P")))
add(_cases("one-pixel", "a valid 1x1 PNG", "a tiny but valid image is resized like any other: accepted", ACCEPT,
           _pil("dot.png", "PNG", size=(1, 1)), routes=("predict",)))
add(_cases("ztxt-bomb", "a valid PNG with a zTXt chunk inflating to 64 MB",
           "text chunks are not needed: bounded (Pillow's text limit) and accepted, or one clear line", ANY_SAFE,
           lambda ctx, f: write(f / "text.png", raw_png(32, 32, extra_chunks=[
               (b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (64 << 20), 9))])), timeout=120))
add(_cases("bad-crc", "a PNG whose IHDR CRC is wrong", "damaged: one clear line, or decoded if the decoder "
           "tolerates it", ANY_SAFE,
           lambda ctx, f: write(f / "crc.png", (lambda b: b[:29] + b"\0\0\0\0" + b[33:])(raw_png(32, 32)))))
add(_cases("truncated-jpeg", "a JPEG cut in half", WHY_BAD, ERROR,
           lambda ctx, f: (lambda p: write(p, p.read_bytes()[: len(p.read_bytes()) // 2]))(
               _pil("half.jpg", "JPEG", size=(64, 64))(ctx, f))))
add(_cases("png16", "a valid 16-bit greyscale PNG", "a valid image: accepted", ACCEPT,
           _pil("deep.png", "PNG", mode="I;16", arr=(np.arange(1024, dtype=np.uint16).reshape(32, 32) * 60)),
           routes=("predict",)))
add(_cases("cmyk-jpeg", "a valid CMYK JPEG", "a valid image: accepted", ACCEPT, _pil("cmyk.jpg", "JPEG", mode="CMYK"),
           routes=("predict",)))
add(_cases("palette", "a valid palette PNG", "a valid image: accepted", ACCEPT, _pil("pal.png", "PNG", mode="P"),
           routes=("predict",)))
add(_cases("tiff-nan", "a float32 TIFF holding NaN pixels",
           "NaN pixels must not become NaN probabilities: refused, or finite output", ANY_SAFE,
           _pil("nan.tif", "TIFF", mode="F", arr=np.where(np.eye(32) > 0, np.nan, 0.5).astype(np.float32)),
           routes=("predict",)))
add(_cases("tiff-inf", "a float32 TIFF holding +inf pixels", "refused, or finite output", ANY_SAFE,
           _pil("inf.tif", "TIFF", mode="F", arr=np.where(np.eye(32) > 0, np.inf, 0.5).astype(np.float32)),
           routes=("predict",)))

# DICOM -------------------------------------------------------------------------------------------------
WHY_DCM = "a damaged or impossible DICOM: one line naming the file and the cause, no patient tag shown"
add(_cases("dcm-slope-zero", "CT DICOM with RescaleSlope 0",
           "item 8: every pixel becomes the intercept, a blank image classified with confidence: refuse or warn",
           REFUSE_OR_WARN, _dcm(RescaleSlope=0), item="8", warn=("slope",), routes=("predict",)))
add(_cases("dcm-slope-nan", "CT DICOM with RescaleSlope NaN", "no usable pixel values: refuse (or warn)",
           REFUSE_OR_WARN, _dcm(RescaleSlope="NaN"), warn=("slope",), routes=("predict",)))
add(_cases("dcm-slope-1e30", "CT DICOM with RescaleSlope 1e30", "values overflow the window into a blank image: "
           "refuse or warn", REFUSE_OR_WARN, _dcm(RescaleSlope="1e30"), warn=("slope",), routes=("predict",)))
add(_cases("dcm-huge-rows", "DICOM declaring 65535x65535 with 32x32 pixel data",
           "the declared size disagrees with the data: refused without allocating 8 GB", ERROR,
           _dcm(Rows=65535, Columns=65535), timeout=120, routes=("check", "predict")))
add(_cases("dcm-rows-zero", "DICOM with Rows 0", WHY_DCM, ERROR, _dcm(Rows=0), routes=("predict",)))
add(_cases("dcm-bits-13", "DICOM with BitsAllocated 13", WHY_DCM, ERROR, _dcm(BitsAllocated=13), routes=("predict",)))
add(_cases("dcm-frames-1e9", "DICOM with NumberOfFrames 1000000000", "declared frames without data: refused, "
           "bounded", ERROR, _dcm(NumberOfFrames=1000000000), timeout=120, routes=("predict",)))
add(_cases("dcm-no-pixels", "DICOM without PixelData", WHY_DCM, ERROR, _dcm(PixelData=None), routes=("predict",)))
add(_cases("dcm-short-pixels", "DICOM whose PixelData is shorter than Rows x Columns", WHY_DCM, ERROR,
           _dcm(PixelData=b"\0" * 100), routes=("predict",)))
add(_cases("dcm-unknown-syntax", "DICOM whose transfer syntax UID is 1.2.3.4.5.6.7.8.9.1 (unknown)",
           "no decoder: one line naming it", ERROR,
           _dcm_bytes("syntax.dcm", lambda b: b.replace(b"1.2.840.10008.1.2.1\0", b"1.2.3.4.5.6.7.8.9.1\0", 1)),
           routes=("predict",)))
add(_cases("dcm-preamble-only", "128 zero bytes + 'DICM' and nothing else", WHY_DCM, ERROR,
           _bytes("pre.dcm", lambda ctx: b"\0" * 128 + b"DICM"), routes=("predict",)))
add(_cases("dcm-truncated", "DICOM cut inside its pixel data", "'truncated', not 'no pixel data'", ERROR,
           _dcm_bytes("cut.dcm", lambda b: b[:-700]), routes=("check", "predict")))
add(_cases("dcm-window-zero", "CT DICOM with WindowWidth 0 (the series' own window)",
           "a zero-width window divides by zero: refused, or a finite result from another window", ANY_SAFE,
           _dcm(WindowCenter=40, WindowWidth=0), routes=("predict",)))
add(_cases("dcm-window-negative", "CT DICOM with WindowWidth -100", "refused, or a finite result", ANY_SAFE,
           _dcm(WindowCenter=40, WindowWidth=-100), routes=("predict",)))
add(_cases("dcm-monochrome1", "a valid MONOCHROME1 DICOM", "a valid image: accepted", ACCEPT,
           _dcm(PhotometricInterpretation="MONOCHROME1"), routes=("predict",)))
add(_cases("dcm-palette-no-lut", "DICOM PALETTE COLOR without its lookup table", WHY_DCM, ERROR,
           _dcm(PhotometricInterpretation="PALETTE COLOR"), routes=("predict",)))
add(_cases("dcm-samples-3", "DICOM SamplesPerPixel 3 with one sample of data", WHY_DCM, ERROR,
           _dcm(SamplesPerPixel=3), routes=("predict",)))
add(_cases("dcm-bits-stored-40", "DICOM with BitsStored 40 > BitsAllocated 16", WHY_DCM, ERROR,
           _dcm(BitsStored=40), routes=("predict",)))

# NIfTI ---------------------------------------------------------------------------------------------------
add(_cases("nii-header-bomb", "NIfTI header declaring 32767^3 voxels with 4x4x4 of data",
           "the header must not allocate 35 TB: one clear line", ERROR,
           lambda ctx, f: nifti(f / "bomb.nii", np.zeros((4, 4, 4), np.float32), header_dims=(32767, 32767, 32767)),
           timeout=120, routes=("predict",)))
add(_cases("nii-all-nan", "NIfTI volume of NaN only", "no finite voxel: refused", ERROR,
           lambda ctx, f: nifti(f / "nan.nii.gz", np.full((8, 8, 4), np.nan, np.float32)), routes=("predict",)))
add(_cases("nii-garbage", "random bytes named .nii.gz", WHY_BAD, ERROR,
           _bytes("junk.nii.gz", lambda ctx: os.urandom(600)), routes=("predict",)))

# not files -----------------------------------------------------------------------------------------------
add(_cases("fifo", "a FIFO named x.png", "reading it blocks forever: skipped or refused, no hang", ERROR,
           lambda ctx, f: fifo(f / "pipe.png"), timeout=60, routes=("check", "predict")))
add(_cases("dev-zero", "x.png, a symlink to /dev/zero", "leads outside the root (refused); never read forever",
           ERROR, lambda ctx, f: symlink(f / "zero.png", "/dev/zero"), timeout=60, routes=("check", "predict")))
add(_cases("dev-zero-follow", "x.png -> /dev/zero with --follow-symlinks", "following links must not read an "
           "endless device: one clear line, bounded", ERROR, lambda ctx, f: symlink(f / "zero.png", "/dev/zero"),
           routes=("check",), extra=("--follow-symlinks",), timeout=60))
add(_cases("symlink-loop", "x.png, a symlink to itself", "one clear line, no hang", ERROR,
           lambda ctx, f: symlink(f / "loop.png", f / "loop.png")))
add(_cases("empty-dir", "predict on an empty folder", "nothing to classify: one clear line", ERROR,
           lambda ctx, f: (f / "empty").mkdir() or f / "empty", routes=("predict",)))
add(_cases("dash", "predict on a file named `-`", "no such file: one clear line", ERROR,
           lambda ctx, f: f / "-", routes=("predict",)))
add(_cases("big-valid", "a valid 6000x6000 PNG (36 megapixels, under the limit)",
           "a big but allowed image is reduced while decoding: accepted", ACCEPT,
           _bytes("big.png", lambda ctx: raw_png(6000, 6000)), routes=("predict",), timeout=120))
