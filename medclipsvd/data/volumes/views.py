"""A volume sample's view: the ``slices|axis|window`` string it carries (``InputPolicy.view``, the dataset's
cache key), and the plane that view renders from the volume, or why it cannot."""
from __future__ import annotations

import os

import numpy as np

from medclipsvd.errors import DataError


def read_view(path: str, index: int | None, view: str) -> np.ndarray:
    from medclipsvd.data.volumes.read import read_volume
    from medclipsvd.data.volumes.slicing import render

    slices, axis, window = split_view(view)
    return render(read_volume(path, modality=view_modality(view)), slices, axis, window, index)


def mask_region(path: str, slices: str = "roi+crop", axis: str = "axial") -> dict:
    """What a mask policy (``--slices roi`` / ``+crop``) makes of one series, to check it before training:
    ``box`` [lo, hi) per canonical array axis (z, y, x), ``plane`` (``roi``: counted in the whole volume) and
    ``mask_voxels``. MaskError (one line) when the series has no usable mask."""
    from medclipsvd.data.volumes.roi import region
    from medclipsvd.data.volumes.slicing import axis_dim, parse_slices

    return region(path, parse_slices(slices), axis_dim(axis))


def make_view(slices: str = "middle", axis: str = "axial", window: str | None = None,
              modality: str | None = None) -> str:
    """``slices|axis|window``, with ``|CT`` / ``|MR`` appended when a modality overrides the guess."""
    return f"{slices}|{axis}|{window or 'auto'}" + (f"|{modality}" if modality else "")


def split_view(view: str) -> tuple[str, str, str]:
    parts = str(view).split("|")
    if len(parts) not in (3, 4):
        raise DataError(f"malformed volume view {view!r}; expected 'slices|axis|window' (e.g. middle|axial|lung).")
    return parts[0], parts[1], parts[2]


def view_modality(view: str) -> str | None:
    """The modality a view overrides the guess with (its optional fourth part), else None."""
    parts = str(view).split("|")
    return parts[3] if len(parts) == 4 else None


def check_view(path: str, index: int | None, level: str, view: str) -> str | None:
    """``data check`` of a volume sample: ``header`` finds and orders the series (and the plane exists),
    ``decode`` renders the plane; ``None`` if fine, else the reason."""
    from medclipsvd.data.volumes.series import SERIES_SEP

    if not os.path.exists(path.split(SERIES_SEP)[0]):
        return "missing"
    if level == "exists":
        return None
    try:
        if level == "decode":
            read_view(path, index, view)
            return None
        from medclipsvd.data.volumes.read import volume_shape
        from medclipsvd.data.volumes.slicing import axis_dim

        _, axis, _ = split_view(view)
        depth = volume_shape(path)[axis_dim(axis)]
        if index is not None and not 0 <= index < depth:
            return f"plane {index} requested but the volume has {depth} {axis} planes"
        return None
    except DataError as exc:
        return str(exc).removeprefix(f"{path}: ")
    except Exception as exc:
        return f"unreadable ({type(exc).__name__})"
