"""``read_image``: every supported file type to one float32 HxWx3 image in [0, 1].

Dispatch is by extension, then by content (a DICOM file may have no extension). Every failure is a
``DataError`` naming the file, the problem and what to do."""
from __future__ import annotations

import functools
import math
import os

import numpy as np

from medclipsvd.data.types import NPZ_KEY_SEP
from medclipsvd.errors import DataError

PIL_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
DICOM_EXTS = {".dcm", ".dicom", ".dic"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = tuple(PIL_EXTS | DICOM_EXTS) + NIFTI_SUFFIXES + (".npz",)

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


def file_kind(path: str | os.PathLike) -> str:
    """``"pil" | "dicom" | "nifti" | "npz"`` from the name, else by sniffing the DICOM preamble."""
    p = str(path)
    if NPZ_KEY_SEP in p or p.lower().endswith(".npz"):
        return "npz"
    low = p.lower()
    if low.endswith(NIFTI_SUFFIXES):
        return "nifti"
    ext = os.path.splitext(low)[1]
    if ext in DICOM_EXTS:
        return "dicom"
    if ext in PIL_EXTS:
        return "pil"
    try:
        import stat

        if not stat.S_ISREG(os.stat(p).st_mode):  # a FIFO would block the sniffing read; _check_file reports it
            return "pil"
        with open(p, "rb") as fh:
            head = fh.read(132)
        if head[128:132] == b"DICM":
            return "dicom"
    except OSError:
        pass
    return "pil"


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found. Check the data root and the split file's relative paths.")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected an image file (a DICOM series folder is a volume: use it "
                        f"in a custom dataset with --slices, or medclipsvd.data.volumes.load_volume_sample).")
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
    kind = file_kind(p)
    if kind == "npz":
        img = read_npz(p, index)
    elif kind == "dicom":
        from medclipsvd.data.dicom import read_dicom

        img = read_dicom(p, index)
    elif kind == "nifti":
        from medclipsvd.data.nifti import read_nifti

        img = read_nifti(p, index)
    else:
        img = read_pil(p, index)
    # every reader checks the size from the header before decoding; this holds for whatever it returns,
    # before the transforms resize it
    check_image_size(p, img.shape[1], img.shape[0])
    return img


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
        kind = file_kind(path)
        if kind == "pil":
            from PIL import Image

            with _pil_open(p) as im:
                check_image_size(p, *im.size)  # header only
        elif kind == "dicom":
            from medclipsvd.data.dicom import check_dicom_header

            check_dicom_header(p)
        elif kind == "nifti":
            from medclipsvd.data.nifti import nifti_shape

            nifti_shape(p)
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
