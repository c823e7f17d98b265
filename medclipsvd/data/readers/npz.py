"""MedMNIST-style ``.npz`` files (``file.npz::array`` + row index): the "npz" row of the formats table.
An .npz is a zip, so the array's size is read from its .npy header before anything is decompressed."""
from __future__ import annotations

import functools
import os

import numpy as np

from medclipsvd.data.readers.common import _check_file, _int_scale, check_image_size, check_volume_size, to_rgb
from medclipsvd.data.types import NPZ_KEY_SEP
from medclipsvd.errors import DataError


@functools.lru_cache(maxsize=8)
def _npz_array(path: str, key: str, mtime: float) -> np.ndarray:
    # mtime in the key: a rewritten file is re-read
    with np.load(path, allow_pickle=False) as z:
        if key not in z.files:
            raise DataError(f"{path}: has no array {key!r} (arrays: {', '.join(z.files)}).")
        return z[key]


def npz_shape(path: str, key: str) -> tuple[int, ...] | None:
    """The shape of array ``key`` from its .npy header inside the zip, without decompressing the data
    (``None`` when the file has no such array or is not a readable .npz: ``npz_array`` says which)."""
    import zipfile

    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
            version = npy.read_magic(fh)
            header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, _ = header(fh)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None
    return tuple(int(n) for n in shape)


def npz_array(path: str, key: str) -> np.ndarray:
    _check_file(path)
    shape = npz_shape(path, key)
    if shape is not None:  # an .npz is a zip: a small file can claim an array far larger than memory
        check_volume_size(f"{path}{NPZ_KEY_SEP}{key}", shape, "array")
    try:
        return _npz_array(path, key, os.path.getmtime(path))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); re-download it.") from None


def read_npz(path: str, index: int | None = None) -> np.ndarray:
    """MedMNIST layout: ``file.npz::train_images`` + row ``index``; uint8 HxW or HxWx3."""
    file, _, key = path.partition(NPZ_KEY_SEP)
    _check_file(file)
    if not key:
        with np.load(file, allow_pickle=False) as z:
            keys = [k for k in z.files if k.endswith("images")]
        if len(keys) != 1:
            raise DataError(f"{file}: say which array to read as '{file}{NPZ_KEY_SEP}<array>' "
                            f"(image arrays: {keys}).")
        key = keys[0]
    shape = npz_shape(file, key)
    rows = index is not None and shape is not None and len(shape) >= 3  # N x H x W[ x C]
    single = index is None and shape is not None and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3)))
    if rows or single:  # the image size from the header, before the array is decompressed
        h, w = shape[1:3] if rows else shape[:2]
        check_image_size(f"{file}{NPZ_KEY_SEP}{key}", w, h)
    arr = npz_array(file, key)
    if index is None:
        if arr.ndim in (2, 3) and (arr.ndim == 2 or arr.shape[-1] in (1, 3)) and arr.shape[0] > 4:
            img = arr
        else:
            raise DataError(f"{file}{NPZ_KEY_SEP}{key}: holds {arr.shape[0]} images; give an index.")
    else:
        if not 0 <= index < arr.shape[0]:
            raise DataError(f"{file}{NPZ_KEY_SEP}{key}: index {index} out of range (0..{arr.shape[0] - 1}).")
        img = arr[index]
    return to_rgb(_int_scale(np.asarray(img)), f"{file}{NPZ_KEY_SEP}{key}[{index}]")
