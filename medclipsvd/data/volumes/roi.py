"""Masks as regions: make the model look where the radiologist drew (a DICOM SEG or RTSTRUCT referencing the
series, found and rasterised by ``masks``).

Parts of the ``--slices`` value, so that the choice travels wherever the slice policy does (the
dataset's views, results.json "run"."input", the model configuration, ``predict``, the MONAI bundle):

* ``--slices roi``: one sample per series, the plane (along ``--axis``) with the largest mask area; ties go
  to the lowest plane index.
* ``+crop`` after any slice policy (``roi+crop``, ``middle+crop:5mm``, ``all+crop:3vox``, ``slices:4+crop``):
  before slicing, the volume is cut to the mask's 3-D bounding box grown by a margin - ``crop`` = 10 mm,
  ``crop:MMmm`` millimetres, ``crop:Nvox`` voxels (a margin in mm becomes ``ceil(MM / spacing)`` voxels per
  axis, so at least MM mm on each side); the box is clipped to the volume. The slice policy then applies to
  the cut volume: ``middle`` is the middle plane of the box, ``all`` every plane through the mask (plus
  margin), ``roi`` the largest-area plane, cropped.
* ``+mask:PATTERN`` (with ``roi`` or ``+crop``): only the SEG segments / RTSTRUCT ROIs whose SegmentLabel /
  ROIName matches the shell pattern (case-insensitive; e.g. ``roi+crop+mask:gtv*`` leaves out the body outline
  and the organs at risk of a radiotherapy structure set). Without it every segment and ROI counts.

A series without a usable mask under these policies is refused (``masks.MaskError``): one line naming the
series, why and how to go on, or left out and listed under ``--on-bad-series skip`` - never a silent
fall-back to the whole volume."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from medclipsvd.errors import DataError

DEFAULT_MARGIN_MM = 10.0


def parse_extras(text: str, spec: str) -> tuple[tuple[float, str] | None, str | None]:
    """What follows the first ``+`` of a slice policy: ``crop[:MARGIN]`` and/or ``mask:PATTERN``, each at most
    once -> (crop margin or None, label pattern or None)."""
    crop = label = None
    for part in text.split("+"):
        head, _, arg = part.strip().partition(":")
        if head == "crop" and crop is None:
            crop = parse_crop(part.strip(), spec)
        elif head == "mask" and label is None and arg.strip() and "|" not in arg:
            label = arg.strip()
        else:
            raise DataError(f"unknown or repeated {part!r} in slice policy {spec!r}; after POLICY come +crop[:MMmm|"
                            f":Nvox] and +mask:PATTERN, once each (e.g. roi+crop:5mm+mask:gtv*).")
    if label is not None and crop is None and spec.partition("+")[0] != "roi":
        raise DataError(f"slice policy {spec!r}: +mask:PATTERN chooses the region of roi or +crop; use e.g. "
                        f"roi+mask:{label} or middle+crop+mask:{label}.")
    return crop, label


def parse_crop(text: str, spec: str) -> tuple[float, str]:
    """``crop``, ``crop:10mm``, ``crop:3vox`` -> (margin, unit)."""
    head, colon, arg = text.strip().partition(":")
    if head == "crop" and not colon:
        return DEFAULT_MARGIN_MM, "mm"
    if head == "crop" and arg:
        for unit in ("mm", "vox"):
            if arg.endswith(unit):
                try:
                    value = float(arg[: -len(unit)])
                except ValueError:
                    break
                if math.isfinite(value) and value >= 0 and (unit == "mm" or value.is_integer()):
                    return value, unit
    raise DataError(f"unknown crop {text!r} in slice policy {spec!r}; use POLICY+crop (10 mm margin), "
                    f"POLICY+crop:MMmm or POLICY+crop:Nvox (e.g. roi+crop:5mm, middle+crop:0vox).")


def crop_box(mask: np.ndarray, spacing_xyz, margin: tuple[float, str]) -> tuple[tuple[int, int], ...]:
    """[lo, hi) per array axis (z, y, x): the mask's bounding box grown by the margin, clipped to the array."""
    value, unit = margin
    spacing_zyx = tuple(spacing_xyz)[::-1]
    box = []
    for ax in range(3):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        grow = int(value) if unit == "vox" else int(math.ceil(value / spacing_zyx[ax] - 1e-9))
        box.append((max(0, int(hit[0]) - grow), min(mask.shape[ax], int(hit[-1]) + 1 + grow)))
    return tuple(box)


def largest_plane(mask: np.ndarray, dim: int) -> int:
    """The plane index along ``dim`` with the most mask voxels (the first of equals)."""
    area = mask.sum(axis=tuple(a for a in range(3) if a != dim))
    return int(np.argmax(area))


def _region(path: str, policy, dim: int, shape=None) -> tuple[tuple[slice, ...], int | None]:
    """The part of the volume the policy keeps and, for ``roi``, the plane within it (``shape``: the
    volume's array shape, checked against the mask's when given)."""
    from medclipsvd.data.volumes.masks import MaskError, canonical_mask

    mask, spacing = canonical_mask(path, policy.mask)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise MaskError(f"{path}: the mask grid {mask.shape} does not match the volume {tuple(shape)}; re-export "
                        f"the mask on this series.")
    box = crop_box(mask, spacing, policy.crop) if policy.crop else tuple((0, n) for n in mask.shape)
    cut = tuple(slice(lo, hi) for lo, hi in box)
    plane = largest_plane(mask[cut], dim) if policy.mode == "roi" else None
    return cut, plane


def focus(vol, policy, dim: int, index: int | None):
    """(the volume to slice, the plane index) under a mask policy; the volume itself otherwise."""
    if not needs_mask(policy):
        return vol, index
    cut, plane = _region(vol.path, policy, dim, vol.array.shape)
    if policy.crop:
        # percentile scaling (MR) keeps the whole volume's range: the crop changes the view, not the intensities
        vol = replace(vol, array=vol.array[cut], _range=None if vol.is_ct else vol.value_range())
    return vol, plane if index is None else index


def roi_depth(path: str, policy, dim: int) -> int:
    """Planes along axis ``dim`` a mask policy leaves (finds and checks the mask: a listing fails early)."""
    cut, _ = _region(path, policy, dim)
    return cut[dim].stop - cut[dim].start


def region(path: str, policy, dim: int) -> dict:
    """``box`` [lo, hi) per canonical array axis (z, y, x; the whole volume without ``+crop``), ``plane``
    (``roi``: the chosen plane, counted in the whole volume) and ``mask_voxels``; see views.mask_region."""
    from medclipsvd.data.volumes.masks import canonical_mask

    cut, plane = _region(path, policy, dim)
    mask, _ = canonical_mask(path, policy.mask)
    return {"box": [[s.start, s.stop] for s in cut],
            "plane": None if plane is None else cut[dim].start + plane, "mask_voxels": int(mask.sum())}


def needs_mask(policy) -> bool:
    return policy.mode == "roi" or policy.crop is not None
