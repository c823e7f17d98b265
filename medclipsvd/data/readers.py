"""``read_image``: every supported file type to one float32 HxWx3 image in [0, 1].

Dispatch goes through the formats table (formats.py): by name, then by content (a DICOM file may have no
extension). Every failure is a
``DataError`` naming the file, the problem and what to do."""
from __future__ import annotations

import functools
import math
import os

import numpy as np

from medclipsvd.data.formats import FORMATS, file_kind
from medclipsvd.data.read_common import (MAX_PIXELS_ENV, _check_file, _int_scale, _mp, check_image_size,
                                          check_volume_size, pixel_limits, to_rgb)
from medclipsvd.data.types import NPZ_KEY_SEP
from medclipsvd.errors import DataError


def _pil_open(path: str):
    """``Image.open`` with our pixel limit in charge of Pillow's bomb check (same threshold by default)."""
    import warnings

    from PIL import Image

    mx, _ = pixel_limits()
    if Image.MAX_IMAGE_PIXELS is not None and mx > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = mx  # the user raised our limit explicitly: Pillow must not refuse first
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # our check reports instead
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow refused before decoding; its message holds the size
        import re

        m = re.search(r"\((\d+) pixels\)", str(exc))
        n = f"{_mp(int(m.group(1)))} megapixels" if m else "larger"
        raise DataError(f"{path}: image is {n}, above the limit of {_mp(mx)} megapixels (a guard against "
                        f"decompression bombs); downscale it, or raise the limit with {MAX_PIXELS_ENV}="
                        f"{m.group(1) if m else 2 * mx} if the image is genuine.") from None


def _reduce(im, work: int):
    """Box-reduce a decoded image by an integer factor so that it holds at most ``work`` pixels."""
    import math

    w, h = im.size
    if w * h <= work:
        return im
    factor = math.ceil(math.sqrt(w * h / work))
    if im.mode in ("I;16", "I;16B", "I;16L"):
        im = im.convert("I")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("L", "RGB", "I", "F", "LA", "RGBA", "CMYK"):
        im = im.convert("RGB")
    return im.reduce(factor)


def read_pil(path: str, index: int | None = None) -> np.ndarray:
    from PIL import UnidentifiedImageError

    _check_file(path)
    try:
        with _pil_open(path) as opened:
            im = opened
            if index is not None:
                n = getattr(im, "n_frames", 1)
                if not 0 <= index < n:
                    raise DataError(f"{path}: page/frame {index} requested but the file has {n}.")
                im.seek(index)
            check_image_size(path, *im.size)  # from the header: nothing decoded yet
            _, work = pixel_limits()
            if im.size[0] * im.size[1] > work and im.format == "JPEG":
                shrink = (work / (im.size[0] * im.size[1])) ** 0.5  # DCT scaling: never below the target
                im.draft(im.mode, tuple(max(1, int(d * shrink)) for d in im.size))
            im.load()  # decode now so truncation is reported here, with the file name
            im = _reduce(im, work)
            mode = im.mode
            if mode in ("RGB", "L"):
                arr = np.asarray(im)
            elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im)
            elif mode in ("LA", "La"):
                arr = np.asarray(im.convert("L"))
            else:  # P, RGBA, CMYK, YCbCr, 1 ...: PIL's own conversion, as open_clip's _convert_to_rgb does
                arr = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format); re-export it as PNG/JPEG "
                        f"or remove it from the split.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: image cannot be decoded ({exc}); the file is probably truncated or corrupt; "
                        f"re-copy it or remove it from the split.") from None
    return to_rgb(_int_scale(arr), path)


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


def read_image(path: str | os.PathLike, index: int | None = None) -> np.ndarray:
    """Read one image as float32 HxWx3 in [0, 1].

    * PNG/JPEG/TIFF/BMP via Pillow (16-bit keeps its precision; ``index`` = TIFF page).
    * DICOM via pydicom (``medclipsvd.data.dicom``; ``index`` = frame, default the middle frame).
    * NIfTI via nibabel (``medclipsvd.data.nifti``; ``index`` = axial slice, default the middle one).
    * MedMNIST ``.npz``: path ``file.npz::train_images`` and ``index`` = row.
    Grey images are repeated to three channels. Raises ``DataError`` for anything unreadable."""
    p = os.fspath(path)
    img = FORMATS[file_kind(p)].read(p, index)  # the formats table (formats.py) names each kind's reader
    # every reader checks the size from the header before decoding; this holds for whatever it returns,
    # before the transforms resize it
    check_image_size(p, img.shape[1], img.shape[0])
    return img


def check_pil_header(path: str) -> None:
    """The image size from the header only (Pillow decodes lazily)."""
    with _pil_open(path) as im:
        check_image_size(path, *im.size)


def read_sample(sample) -> np.ndarray:
    """A ``Sample`` as float32 HxWx3 in [0, 1]: volumes (``sample.view`` set) through ``data.volumes``, every
    other file through ``read_image`` exactly as before."""
    if getattr(sample, "view", None):
        return read_view(sample.path, sample.index, sample.view)
    return read_image(sample.path, sample.index)


def read_view(path: str, index: int | None, view: str) -> np.ndarray:
    from medclipsvd.data.slicing import render
    from medclipsvd.data.volumes import read_volume

    slices, axis, window = split_view(view)
    return render(read_volume(path), slices, axis, window, index)


def make_view(slices: str = "middle", axis: str = "axial", window: str | None = None) -> str:
    return f"{slices}|{axis}|{window or 'auto'}"


def split_view(view: str) -> tuple[str, str, str]:
    parts = str(view).split("|")
    if len(parts) != 3:
        raise DataError(f"malformed volume view {view!r}; expected 'slices|axis|window' (e.g. middle|axial|lung).")
    return parts[0], parts[1], parts[2]


def check_readable(path: str, index: int | None = None, level: str = "header", view: str | None = None) -> str | None:
    """Cheap readability check for ``data check``: ``None`` if fine, else the reason.

    ``exists``: the file exists and is non-empty. ``header``: its header parses. ``decode``: full read.
    Volume samples (``view`` set): ``header`` finds and orders the series, ``decode`` renders the plane."""
    if view:
        return _check_volume(path, index, level, view)
    p = path.partition(NPZ_KEY_SEP)[0]
    if not os.path.exists(p):
        return "missing"
    if level == "exists":
        from medclipsvd.data.limits import check_regular_file

        try:
            check_regular_file(p)
        except DataError as exc:
            return str(exc).removeprefix(f"{p}: ")
        return "empty file (0 bytes)" if os.path.getsize(p) == 0 else None
    try:
        if level == "decode":
            read_image(path, index)
            return None
        _check_file(p)
        FORMATS[file_kind(path)].check_header(p)
        return None
    except DataError as exc:
        return str(exc).removeprefix(f"{p}: ")
    except Exception as exc:  # header parsers raise many types; the report needs only the reason
        return f"unreadable ({type(exc).__name__})"



def _check_volume(path: str, index: int | None, level: str, view: str) -> str | None:
    from medclipsvd.data.volumes import SERIES_SEP

    if not os.path.exists(path.split(SERIES_SEP)[0]):
        return "missing"
    if level == "exists":
        return None
    try:
        if level == "decode":
            read_view(path, index, view)
            return None
        from medclipsvd.data.slicing import axis_dim
        from medclipsvd.data.volumes import volume_shape

        _, axis, _ = split_view(view)
        depth = volume_shape(path)[axis_dim(axis)]
        if index is not None and not 0 <= index < depth:
            return f"plane {index} requested but the volume has {depth} {axis} planes"
        return None
    except DataError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except Exception as exc:
        return f"unreadable ({type(exc).__name__})"
