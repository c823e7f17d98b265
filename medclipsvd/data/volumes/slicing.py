"""3-D -> 2-D policy: which planes of a canonical (LPS) volume become model inputs, and how they look.

``--slices`` (one value per dataset / pipeline / command):

* ``middle`` (default): the middle plane along the axis - one sample per volume;
* ``slices:N``: N planes evenly spaced over the volume (plane ``floor((i + 0.5) * depth / N)``), N samples;
* ``all``: every plane is a sample;
* ``mip`` / ``mip:MM``: maximum-intensity projection over a slab of MM millimetres (default 10) centred on
  the middle plane - one sample; the projection is taken in physical units, then windowed;
* ``2.5d``: planes k-1, k, k+1 around the middle as the R, G, B channels - one sample (not with ``multi``
  windows, which use the channels too);
* ``roi``: the plane with the largest area of the series' SEG/RTSTRUCT mask - one sample; ``+crop[:MARGIN]``
  after any policy cuts the volume to the mask's bounding box first, ``+mask:PATTERN`` chooses the segments
  (``medclipsvd.data.volumes.roi``).

``--axis``: axial (default), coronal or sagittal, after reorienting to the canonical orientation. Planes
are shown in radiological convention (axial: anterior up, patient's right on the image's left; coronal and
sagittal: superior up) and resampled to square pixels when the spacing differs along the two plane axes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medclipsvd.data.volumes.windows import parse_window, resolve_windows, to_unit
from medclipsvd.errors import DataError

AXES = ("axial", "coronal", "sagittal")
DEFAULT_MIP_MM = 10.0
SLICES_HELP = ("3-D -> 2-D policy for volumes (DICOM series, NIfTI, multi-frame): middle (default), slices:N "
               "(N evenly spaced), all (every slice), mip[:MM] (max-intensity slab, 10 mm), 2.5d (3 adjacent "
               "slices as RGB), roi (the plane with the largest SEG/RTSTRUCT mask area); +crop[:10mm|:Nvox] after "
               "any of them cuts the volume to the mask's bounding box; +mask:PATTERN picks segments/ROIs by name.")
AXIS_HELP = "Slicing axis after reorienting volumes to a canonical orientation: axial, coronal or sagittal."


@dataclass(frozen=True)
class SlicePolicy:
    spec: str
    mode: str  # middle | slices | all | mip | 2.5d | roi
    n: int | None = None
    slab_mm: float = DEFAULT_MIP_MM
    crop: tuple[float, str] | None = None  # "+crop": margin around the mask's box, (value, "mm" | "vox")
    mask: str | None = None  # "+mask:PATTERN": the segments / ROIs that make the mask (None: all)

    @property
    def single(self) -> bool:
        """One sample per volume (the middle plane, its slab or its neighbourhood, the mask's plane)."""
        return self.mode in ("middle", "mip", "2.5d", "roi")


def parse_slices(spec: str | None) -> SlicePolicy:
    full = "middle" if spec is None else str(spec).strip().lower()
    s, plus, extras = full.partition("+")
    crop = mask = None
    if plus:
        from medclipsvd.data.volumes.roi import parse_extras

        crop, mask = parse_extras(extras, full)
    if s in ("middle", "all", "2.5d", "mip", "roi"):
        return SlicePolicy(full, s, crop=crop, mask=mask)
    head, _, arg = s.partition(":")
    if head in ("slices", "mip") and arg:
        try:
            val = float(arg)
        except ValueError:
            val = float("nan")
        if head == "slices" and val.is_integer() and val >= 1:
            return SlicePolicy(full, "slices", n=int(val), crop=crop, mask=mask)
        if head == "mip" and np.isfinite(val) and val > 0:
            return SlicePolicy(full, "mip", slab_mm=val, crop=crop, mask=mask)
    raise DataError(f"unknown slice policy {spec!r}; use middle, slices:N (N >= 1), all, mip[:MM], 2.5d or roi "
                    f"(each optionally +crop[:MMmm|:Nvox], and +mask:PATTERN with roi or +crop).")


def axis_dim(axis: str) -> int:
    a = str(axis).strip().lower()
    if a not in AXES:
        raise DataError(f"unknown axis {axis!r}; use axial, coronal or sagittal.")
    return AXES.index(a)


def plane_indices(policy: SlicePolicy, depth: int) -> list[int | None]:
    """Plane indices that become samples; ``[None]`` = the middle plane (resolved when read)."""
    if policy.single:
        return [None]
    if policy.mode == "all" or policy.n >= depth:
        return list(range(depth))
    return sorted({int((i + 0.5) * depth / policy.n) for i in range(policy.n)})


def _oriented(arr: np.ndarray, dim: int) -> np.ndarray:
    """A plane (or slab with the axis first) as displayed: see the module docstring for the convention."""
    return arr if dim == 0 else arr[..., ::-1, :]  # coronal/sagittal: rows run z; superior up


def _square_pixels(plane: np.ndarray, row_mm: float, col_mm: float, path: str) -> np.ndarray:
    from medclipsvd.data.readers.common import check_image_size

    if not (row_mm > 0 and col_mm > 0 and np.isfinite(row_mm / col_mm)):
        raise DataError(f"{path}: voxel spacing {row_mm:g} x {col_mm:g} mm cannot be resampled to square pixels; "
                        f"fix the spacing in the file's header.")
    ratio = row_mm / col_mm
    # the plane as the model will get it, checked before resampling: a header spacing of 1000 mm x 0.001 mm
    # (or a 1 x 60000 plane) would otherwise ask for gigabytes here or in the transforms
    check_image_size(path, plane.shape[1], max(1, round(plane.shape[0] * ratio)))
    if abs(ratio - 1.0) < 0.01:
        return plane
    from scipy.ndimage import zoom

    return zoom(plane, (ratio, 1.0), order=1, mode="nearest", grid_mode=True)


def _take(vol_arr: np.ndarray, dim: int, lo: int, hi: int) -> np.ndarray:
    """Planes lo..hi-1 along dim, with the plane axis moved first: (n, rows, cols)."""
    sl = [slice(None)] * 3
    sl[dim] = slice(lo, hi)
    return np.moveaxis(vol_arr[tuple(sl)], dim, 0)


def render(vol, policy: SlicePolicy | str, axis: str = "axial", window=None, index: int | None = None) -> np.ndarray:
    """One model input from a ``Volume``: float32 HxWx3 in [0, 1]."""
    policy = parse_slices(policy) if isinstance(policy, str) else policy
    win = window if hasattr(window, "kind") else parse_window(window)
    dim = axis_dim(axis)
    from medclipsvd.data.volumes.roi import focus

    vol, index = focus(vol, policy, dim, index)  # roi / +crop: the mask's plane and box (unchanged otherwise)
    depth = vol.array.shape[dim]
    k = depth // 2 if index is None else int(index)
    if not 0 <= k < depth:
        raise DataError(f"{vol.path}: plane {k} requested but the volume has {depth} {AXES[dim]} planes.")
    sx, sy, sz = vol.spacing
    row_mm, col_mm = ((sy, sx), (sz, sx), (sz, sy))[dim]
    along = (sz, sy, sx)[dim]
    hows = resolve_windows(win, vol.is_ct, vol.stored_window, vol.value_range() if not vol.is_ct else (0.0, 1.0))
    if policy.mode == "2.5d":
        if len(hows) == 3:
            raise DataError(f"{vol.path}: slices 2.5d and window {win.spec!r} both use the three colour channels; "
                            f"choose one (e.g. --slices 2.5d --window lung, or --slices middle --window multi).")
        planes = [_take(vol.array, dim, j, j + 1)[0] for j in (max(0, k - 1), k, min(depth - 1, k + 1))]
        chans = [to_unit(_square_pixels(_oriented(p, dim), row_mm, col_mm, vol.path), hows[0]) for p in planes]
    else:
        if policy.mode == "mip":
            n = max(1, int(round(policy.slab_mm / along)))
            lo = max(0, k - n // 2)
            plane = _take(vol.array, dim, lo, min(depth, lo + n)).max(axis=0)
        else:
            plane = _take(vol.array, dim, k, k + 1)[0]
        plane = _square_pixels(_oriented(plane, dim), row_mm, col_mm, vol.path)
        chans = [to_unit(plane, h) for h in hows]
    if len(chans) == 1:
        chans = chans * 3
    return np.ascontiguousarray(np.stack(chans, axis=-1).astype(np.float32))
