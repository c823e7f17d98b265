"""NIfTI volumes to 2-D images by a documented slice policy.

Policy: the volume is reoriented to the closest canonical (RAS+) orientation, so the third axis runs
inferior -> superior and ``[:, :, k]`` is axial slice k whatever the scanner's storage order.
``index=None`` reads the middle axial slice (``depth // 2``); ``index=k`` reads slice k; hospital datasets
can expand every slice into its own sample (``nifti_slices="all"``). 4-D series use their first volume;
2-D images are used as they are. The slice is rotated by 90 degrees so anterior is up (radiological
display), then scaled to [0, 1] between its 0.5th and 99.5th percentiles (robust to a few extreme voxels,
which in CT and MRI would otherwise flatten the contrast). NaN/inf voxels are an error: they usually mean
a masked export, and silently filling them would hide that."""
from __future__ import annotations

import os

import numpy as np

from medclipsvd.data.readers.common import _check_file, to_rgb
from medclipsvd.errors import DataError

PERCENTILES = (0.5, 99.5)


def _load(path: str):
    """The image with its header parsed and sizes checked; the voxels are read only when asked for."""
    import nibabel as nib

    from medclipsvd.data.readers.common import check_image_size, check_volume_size

    _check_file(path)
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
    while data.ndim > 3:  # 4-D (time / channels): first volume
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
