"""NIfTI volumes to 2-D images by a documented slice policy.

Policy: the volume is reoriented to the closest canonical (RAS+) orientation, so the third axis runs
inferior -> superior and ``[:, :, k]`` is axial slice k whatever the scanner's storage order.
``index=None`` reads the middle axial slice (``depth // 2``); ``index=k`` reads slice k; hospital datasets
can expand every slice into its own sample (``nifti_slices="all"``). A one-slice file with several time
points, or a 4-D volume asked for as one 2-D image, is refused (volumes, 4-D included, are read by
``data.volumes``, each volume of a 4-D file its own sample); 2-D images are used as they are.
Every file's header is checked first (``check_nifti``): malformed dimensions, voxel sizes or affine, and
voxel data shorter than the header promises, are one-line errors naming the file. The slice is rotated by 90 degrees so anterior is up (radiological
display), then scaled to [0, 1] between its 0.5th and 99.5th percentiles (robust to a few extreme voxels,
which in CT and MRI would otherwise flatten the contrast). NaN/inf voxels are an error: they usually mean
a masked export, and silently filling them would hide that."""
from __future__ import annotations

import contextlib
import functools
import gzip
import os
import zlib

import numpy as np

from medclipsvd.data.readers.common import check_file, to_rgb
from medclipsvd.errors import DataError

PERCENTILES = (0.5, 99.5)


def check_nifti(path: str) -> tuple[int, ...]:
    """The header checked before anything decodes the file (ITK would zero-fill a short file and make up
    sizes from a broken header): dimensions, voxel sizes and affine that make sense, and all the voxel
    bytes the header promises present. Returns the shape. Cached per file state."""
    check_file(path)
    st = os.stat(path)
    return _check_nifti(os.fspath(path), st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs header faults to stderr while loading; the DataError says it once, on one line."""
    import logging

    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def _header_error(path: str, what: str) -> DataError:
    return DataError(f"{path}: malformed NIfTI header ({what}); re-export the file (e.g. with nibabel or "
                     f"dcm2niix), or remove it from the dataset.")


@functools.lru_cache(maxsize=256)
def _check_nifti(path: str, size: int, mtime: int) -> tuple[int, ...]:
    import nibabel as nib

    try:
        with _quiet_nibabel():
            img = nib.load(path)
        shape = tuple(int(n) for n in img.shape)
        dtype = np.dtype(img.get_data_dtype())
        offset = int(img.dataobj.offset)
        pixdim = np.asarray(img.header["pixdim"][1:4], dtype=float)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as exc:  # nibabel's header errors name fields and codes, never patient data
        if path.lower().endswith(".gz") and not _gzip_complete(path):
            raise DataError(f"{path}: NIfTI file is truncated (its gzip stream ends early, {size:,} bytes); re-copy "
                            f"it from the source, or remove it from the dataset.") from None
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise _header_error(path, f"{type(exc).__name__}: {first}") from None
    if not shape or any(n < 1 for n in shape):
        raise _header_error(path, f"dimensions {'x'.join(map(str, shape)) or 'none'}; every dimension must be 1 or more")
    spatial = pixdim[:min(3, len(shape))]
    if not (np.isfinite(spatial).all() and (spatial > 0).all()) or not np.isfinite(affine).all():
        raise _header_error(path, f"voxel sizes {', '.join(f'{v:g}' for v in spatial)} mm / affine not positive "
                                  f"and finite")
    from medclipsvd.data.readers.common import check_volume_size

    check_volume_size(path, shape, "NIfTI image")  # a size that no file holds is that, before it is "truncated"
    expected = int(np.prod(shape)) * dtype.itemsize
    have = _data_bytes(path, size, offset + expected) - offset
    if have < expected:
        per = expected // shape[2] if len(shape) >= 3 else expected
        slices = f" (about {max(have, 0) // per} of {shape[2]} slices)" if len(shape) >= 3 else ""
        raise DataError(f"{path}: NIfTI voxel data is truncated: the header promises "
                        f"{'x'.join(map(str, shape))} {dtype} voxels ({expected:,} bytes) but the file holds "
                        f"{max(have, 0):,}{slices}; re-copy it from the source, or remove it from the dataset.")
    return shape


def _gzip_complete(path: str) -> bool:
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 16):
                pass
        return True
    except (EOFError, OSError, zlib.error):
        return False


def _data_bytes(path: str, size: int, wanted: int) -> int:
    """Bytes of the (decompressed) file. A .nii.gz's gzip footer gives its length without decompressing;
    when it does not match (several gzip members, a cut stream) the stream is counted."""
    if not path.lower().endswith(".gz"):
        return size
    with open(path, "rb") as fh:
        fh.seek(max(size - 4, 0))
        if int.from_bytes(fh.read(4), "little") == wanted % 2 ** 32:
            return wanted
    n = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 16):
                n += len(chunk)
    except (EOFError, OSError, zlib.error):  # a cut or corrupt stream: what came before counts
        pass
    return n


def _load(path: str):
    """The image with its header parsed and sizes checked; the voxels are read only when asked for."""
    import nibabel as nib

    from medclipsvd.data.readers.common import check_image_size, check_volume_size

    check_nifti(path)
    try:
        img = nib.load(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc}); check that it is "
                        f"complete (.nii or .nii.gz).") from None
    shape = tuple(int(n) for n in img.shape)
    check_volume_size(path, shape, "NIfTI image")  # read_nifti decodes every voxel to take one slice
    plane = _slice_shape(img, shape)
    if plane is not None:
        check_image_size(path, *plane)
    return img


def _slice_shape(img, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The sizes of the 2-D slice ``read_nifti`` takes: the two axes that are not axial after reorientation
    to RAS+ (``None`` when the affine gives no orientation; the slice is then checked once read)."""
    if len(shape) == 2:
        return shape[1], shape[0]
    if len(shape) < 2:
        return None
    try:
        import nibabel as nib

        to_ras = nib.io_orientation(img.affine)[:3, 0]
    except Exception:  # noqa: BLE001 - a broken affine is reported by as_closest_canonical when read
        return None
    if not np.isfinite(to_ras).all():
        return None
    inplane = [shape[i] for i in range(3) if int(to_ras[i]) != 2]
    return (inplane[0], inplane[1]) if len(inplane) == 2 else None


def nifti_shape(path: str) -> tuple[int, ...]:
    """Header-only check; returns the volume shape."""
    return tuple(int(n) for n in _load(path).shape)


def nifti_num_slices(path: str) -> int:
    shape = nifti_shape(path)
    return 1 if len(shape) < 3 else shape[2]


def read_nifti(path: str, index: int | None = None) -> np.ndarray:
    import nibabel as nib

    path = os.fspath(path)
    img = _load(path)
    try:
        if len(img.shape) >= 3:
            img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: NIfTI voxel data cannot be read ({type(exc).__name__}: {exc}); the file is "
                        f"probably truncated.") from None
    if data.ndim > 3 and int(np.prod(data.shape[3:])) > 1:  # never silently the first volume only
        raise DataError(f"{path}: NIfTI is 4-D ({int(np.prod(data.shape[3:]))} volumes: time points or b-values) "
                        f"where one 2-D image is expected; use it as a volume (in a custom dataset each volume "
                        f"is a sample; {path}#series=@t0 picks the first), or split it into one file per volume.")
    while data.ndim > 3:
        data = data[..., 0]
    if data.ndim == 3:
        depth = data.shape[2]
        k = depth // 2 if index is None else index
        if not 0 <= k < depth:
            raise DataError(f"{path}: slice {k} requested but the volume has {depth} axial slices.")
        sl = data[:, :, k]
    elif data.ndim == 2:
        if index not in (None, 0):
            raise DataError(f"{path}: is a 2-D image; slice {index} does not exist.")
        sl = data
    else:
        raise DataError(f"{path}: NIfTI has shape {data.shape}; expected a 2-D, 3-D or 4-D image.")
    sl = np.asarray(sl, dtype=np.float64)
    if not np.isfinite(sl).all():
        bad = int((~np.isfinite(sl)).sum())
        raise DataError(f"{path}: slice {index if index is not None else 'middle'} contains {bad} NaN/inf voxels; "
                        f"fill or mask them in the export (e.g. set background to the minimum) and retry.")
    sl = np.rot90(sl)
    lo, hi = np.percentile(sl, PERCENTILES)
    out = np.zeros_like(sl) if hi <= lo else np.clip((sl - lo) / (hi - lo), 0.0, 1.0)
    return to_rgb(out, path)
