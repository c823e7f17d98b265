"""The voxel grid of a stack of slices, and the resampling that makes an irregular stack one regular volume.

Scanners export stacks that are not a regular grid, and a model must not see them distorted:

* **Variable slice spacing** (a GE head CT stepping 4 mm through the skull base, then 7 mm): the planes are
  resampled, by linear interpolation along the slice normal, to a uniform step - the smallest step of the
  series, so no acquired detail is thinned out. A stack that would grow beyond ``MAX_UPSAMPLE`` times its
  slice count (a stray sliver of a step) is refused instead.
* **Gantry tilt** (slice origins drift in-plane from slice to slice): each plane is shifted back, by linear
  interpolation, onto the grid of the first slice, so coronal and sagittal planes are not sheared. Voxels
  that enter the grid from outside the acquired field take the volume's minimum (air in CT).

A regular, untilted stack - every clean export - is left untouched (no interpolation, pixels identical).
The geometry is computed from the headers (``stack_geometry``), so shapes are known before any decoding."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medclipsvd.errors import DataError

REGULAR_TOL = (0.1, 0.01)  # steps within 10 % + 0.01 mm of the median are one regular step (as before)
TILT_TOL_PX = 0.01          # in-plane drift below a hundredth of a pixel is rounding, not tilt
MAX_UPSAMPLE = 4            # resampled depth at most this many times the slice count


@dataclass(frozen=True)
class StackGeometry:
    """Where the ordered slices sit: ``z`` along the normal (mm, ascending), ``shift`` the in-plane offset
    of each slice's origin from the first one's (mm along the row and column directions), the uniform
    ``step`` of the output grid and its ``depth`` (planes)."""

    z: tuple[float, ...]
    shift: tuple[tuple[float, float], ...]
    step: float
    depth: int
    regular: bool
    tilted: bool

    @property
    def resampled(self) -> bool:
        return not self.regular or self.tilted


def stack_geometry(positions, orientation, pixel_spacing, where: str) -> StackGeometry:
    """The grid of slices already ordered along the normal (``positions``: ImagePositionPatient each)."""
    r, c = np.array(orientation[:3], dtype=float), np.array(orientation[3:], dtype=float)
    normal = np.cross(r, c)
    p = np.asarray(positions, dtype=float)
    z = p @ normal
    d = p - p[0] - np.outer(z - z[0], normal)  # in-plane drift of each origin
    shift = np.stack([d @ r, d @ c], axis=1)
    row_sp, col_sp = pixel_spacing or (1.0, 1.0)
    tilted = bool(np.abs(shift[:, 0] / col_sp).max() > TILT_TOL_PX or np.abs(shift[:, 1] / row_sp).max() > TILT_TOL_PX)
    steps = np.diff(z)
    med = float(np.median(steps))
    regular = bool(np.abs(steps - med).max() <= REGULAR_TOL[0] * med + REGULAR_TOL[1])
    if regular:
        step, depth = med, len(z)
    else:
        step = float(steps.min())
        depth = int(np.floor((z[-1] - z[0]) / step + 1e-6)) + 1
        if depth > MAX_UPSAMPLE * len(z):
            raise DataError(f"{where}: slice spacing varies from {steps.min():.2f} to {steps.max():.2f} mm; resampled "
                            f"to a uniform {step:.2f} mm step it would hold {depth} planes for {len(z)} slices (more "
                            f"than {MAX_UPSAMPLE}x); remove the stray slice or re-export the series with a uniform "
                            f"spacing.")
    return StackGeometry(tuple(float(v) for v in z), tuple((float(a), float(b)) for a, b in shift), step, depth,
                         regular, tilted)


def regularize(arr: np.ndarray, geo: StackGeometry, pixel_spacing) -> np.ndarray:
    """``arr[k, row, col]`` (slice k of the ordered stack) on the uniform, untilted grid of ``geo``."""
    if not geo.resampled:
        return arr
    arr = np.asarray(arr, dtype=np.float32)
    fill = float(arr.min()) if arr.size else 0.0
    if geo.tilted:
        from scipy import ndimage

        row_sp, col_sp = pixel_spacing or (1.0, 1.0)
        out = np.empty_like(arr)
        for k, (dr, dc) in enumerate(geo.shift):
            # slice k's pixel (i, j) lies at grid index (i + dc/row_sp, j + dr/col_sp) of the first slice
            out[k] = ndimage.shift(arr[k], (dc / row_sp, dr / col_sp), order=1, mode="constant", cval=fill,
                                   prefilter=False)
        arr = out
    if not geo.regular:
        z = np.asarray(geo.z)
        target = z[0] + geo.step * np.arange(geo.depth)
        hi = np.clip(np.searchsorted(z, target, side="right"), 1, len(z) - 1)
        lo = hi - 1
        w = ((target - z[lo]) / (z[hi] - z[lo])).astype(np.float32)[:, None, None]
        arr = arr[lo] * (1 - w) + arr[hi] * w
    return np.ascontiguousarray(arr, dtype=np.float32)
