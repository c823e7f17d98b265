"""What every reader shares: size limits checked before decoding (images, volumes) and the conversion of
decoded pixels to float32 RGB in [0, 1]. Readers import this module and the formats table imports none of
them (it names them), so no reader needs the dispatcher (dispatch.py)."""
from __future__ import annotations

import math
import os

import numpy as np

from medclipsvd.errors import DataError

# Bounded memory (decompression bombs: a 97 KB PNG can hold 10000x10000 pixels). Above MAX the image is
# refused before decoding; above WORK it is reduced while decoding (JPEG: DCT scaling via draft; others:
# box reduction right after the 8/16-bit decode, before the float32 copy that costs 12 bytes a pixel).
# The models see 224x224 crops, so nothing is lost that they could use.
MAX_PIXELS_ENV = "MEDCLIPSVD_MAX_IMAGE_PIXELS"
WORK_PIXELS_ENV = "MEDCLIPSVD_WORK_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # Pillow's own bomb threshold (2 x Image.MAX_IMAGE_PIXELS)
DEFAULT_WORK_PIXELS = 4096 * 4096
# The pixel count alone does not bound memory: evaluation resizes the *shorter* side to the model's input
# (224), so a 1x60000 image (138 bytes as a PNG) becomes 224 x 13.4 M pixels, ~36 GB as float32. The aspect
# ratio bounds that blow-up (50:1 gives at most 224 x 11200, 30 MB); the side bounds what the pixel count
# lets through at that ratio. Real medical images stay far inside both (long-leg or spine radiographs and
# panoramic dental films are about 3:1; the shared test data at most 1.6:1 and 1365 pixels).
MAX_SIDE_ENV = "MEDCLIPSVD_MAX_IMAGE_SIDE"
MAX_ASPECT_ENV = "MEDCLIPSVD_MAX_IMAGE_ASPECT"
DEFAULT_MAX_SIDE = 65_536
DEFAULT_MAX_ASPECT = 50
# A volume (DICOM series, NIfTI, multi-frame DICOM) or a .npz image array is decoded whole; slices x rows x
# columns is read from the headers first. 1024^3 voxels are 4 GiB as float32 (a 1000-slice 512x512 CT is a
# quarter of that).
MAX_VOXELS_ENV = "MEDCLIPSVD_MAX_VOLUME_VOXELS"
DEFAULT_MAX_VOXELS = 1024 ** 3


def _env_pixels(name: str, default: int) -> int:
    from medclipsvd.data.limits import env_limit

    return int(env_limit(name, default, "pixel count"))


def pixel_limits() -> tuple[int, int]:
    """``(max_pixels, work_pixels)``: refuse above the first, reduce above the second (both per image or
    frame, configurable with MEDCLIPSVD_MAX_IMAGE_PIXELS / MEDCLIPSVD_WORK_IMAGE_PIXELS)."""
    mx = _env_pixels(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)
    return mx, min(mx, _env_pixels(WORK_PIXELS_ENV, DEFAULT_WORK_PIXELS))


def shape_limits() -> tuple[int, float, int]:
    """``(max_side, max_aspect, max_voxels)`` (MEDCLIPSVD_MAX_IMAGE_SIDE / _IMAGE_ASPECT / _VOLUME_VOXELS)."""
    from medclipsvd.data.limits import env_limit

    return (int(env_limit(MAX_SIDE_ENV, DEFAULT_MAX_SIDE, "number of pixels")),
            env_limit(MAX_ASPECT_ENV, DEFAULT_MAX_ASPECT, "ratio (longer side / shorter side)", integer=False),
            int(env_limit(MAX_VOXELS_ENV, DEFAULT_MAX_VOXELS, "number of voxels")))


def _mp(n: float) -> str:
    return f"{n / 1e6:.0f}" if n >= 1e7 else f"{n / 1e6:.2g}"


def check_image_size(path: str, width: int, height: int) -> None:
    """``DataError`` when one image (frame, plane) given by its header size is too large or too elongated
    to decode and resize in bounded memory: pixels, longer side and aspect ratio, each with its own limit."""
    mx, _ = pixel_limits()
    w, h = int(width), int(height)
    if w < 1 or h < 1:
        raise DataError(f"{path}: image is {w}x{h}: it has no pixels; re-export it or remove it from the split.")
    n = w * h
    if n > mx:
        raise DataError(f"{path}: image is {w}x{h} = {_mp(n)} megapixels, above the limit of "
                        f"{_mp(mx)} megapixels (a guard against decompression bombs); downscale it, or "
                        f"raise the limit with {MAX_PIXELS_ENV}={n} if the image is genuine.")
    max_side, max_aspect, _ = shape_limits()
    if max(w, h) > max_side:
        raise DataError(f"{path}: image is {w}x{h}; its longer side is above the limit of {max_side:,} pixels "
                        f"(a guard against decompression bombs); downscale it, or raise the limit with "
                        f"{MAX_SIDE_ENV}={max(w, h)} if the image is genuine.")
    aspect = max(w, h) / min(w, h)
    if aspect > max_aspect:
        ratio = f"{aspect:,.0f}" if aspect >= 100 else f"{aspect:.1f}"
        raise DataError(f"{path}: image is {w}x{h}, an aspect ratio of {ratio}:1, above the limit of "
                        f"{max_aspect:g}:1 (resizing its shorter side to the model's input would take "
                        f"{_resize_bytes(aspect)}); crop or pad it, or raise the limit with "
                        f"{MAX_ASPECT_ENV}={math.ceil(aspect)} if the image is genuine.")


def _resize_bytes(aspect: float, side: int = 224) -> str:
    n = side * side * aspect * 3 * 4  # float32 RGB at the models' input size
    return f"{n / 1e9:.0f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def check_volume_size(path: str, dims: tuple[int, ...], what: str = "volume") -> None:
    """``DataError`` when a volume or image stack (sizes from its header) holds more voxels than the limit."""
    _, _, mx = shape_limits()
    n = math.prod(int(d) for d in dims)
    if n > mx:
        shape = "x".join(str(int(d)) for d in dims)
        raise DataError(f"{path}: {what} is {shape} = {n:,} voxels, above the limit of {mx:,} (it is decoded "
                        f"whole; a guard against files that claim more than memory holds); crop or resample it, "
                        f"or raise the limit with {MAX_VOXELS_ENV}={n} if it is genuine.")


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found. Check the data root and the split file's relative paths.")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected an image file (a DICOM series folder is a volume: use it "
                        f"in a custom dataset with --slices, or medclipsvd.data.volumes.read.load_volume_sample).")
    from medclipsvd.data.limits import check_regular_file

    check_regular_file(path, "image file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty (0 bytes); re-copy or re-download it, or remove it from the "
                        f"split (data check --allow-missing drops it).")


def to_rgb(gray_or_rgb: np.ndarray, path: str) -> np.ndarray:
    """HxW or HxWxC float image -> contiguous float32 HxWx3; rejects non-finite values."""
    a = np.asarray(gray_or_rgb, dtype=np.float32)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:  # alpha dropped: the models see RGB
        a = a[:, :, :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise DataError(f"{path}: image has shape {a.shape}; expected HxW, HxWx1, HxWx3 or HxWx4.")
    if not np.isfinite(a).all():
        raise DataError(f"{path}: image contains NaN or infinite values; fix the export (e.g. fill masked "
                        f"voxels) before training.")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):  # most readers give [0, 1] already: spare the copy
        a = np.clip(a, 0.0, 1.0)
    return np.ascontiguousarray(a)


def minmax(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own range (constant images become 0)."""
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo)


def _div_inplace(a: np.ndarray, scale: float) -> np.ndarray:
    out = a.astype(np.float32)
    np.divide(out, np.float32(scale), out=out)
    return out


def _int_scale(a: np.ndarray) -> np.ndarray:
    """Integer pixels to [0, 1] by their type's range (16-bit PNG/TIFF keep full precision)."""
    if a.dtype == np.uint8 or a.dtype == bool:  # in place: one float copy, same values as astype() / 255
        return _div_inplace(a, 1.0 if a.dtype == bool else 255.0)
    if a.dtype == np.uint16:
        return _div_inplace(a, 65535.0)
    if np.issubdtype(a.dtype, np.integer):
        # PIL mode "I" (int32) holds 16-bit data in practice; beyond that use the image's own range
        if a.min() >= 0 and a.max() <= 65535:
            return a.astype(np.float32) / (255.0 if a.max() <= 255 else 65535.0)
        return minmax(a)
    return minmax(a)  # float images have no fixed range
