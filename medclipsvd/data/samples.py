"""One ``Sample`` (or its path, index and view) -> its pixels, or why they cannot be read: volume samples
(``view`` set) through ``data.volumes``, every other file through the reader table (``read_image``)."""
from __future__ import annotations

import numpy as np

from medclipsvd.data.readers.dispatch import check_image, read_image
from medclipsvd.data.volumes.views import check_view, read_view


def read_sample(sample) -> np.ndarray:
    """A ``Sample`` as float32 HxWx3 in [0, 1]: volumes (``sample.view`` set) through ``data.volumes``, every
    other file through ``read_image`` exactly as before."""
    if getattr(sample, "view", None):
        return read_view(sample.path, sample.index, sample.view)
    return read_image(sample.path, sample.index)


def check_readable(path: str, index: int | None = None, level: str = "header", view: str | None = None) -> str | None:
    """Cheap readability check for ``data check``: ``None`` if fine, else the reason.

    ``exists``: the file exists and is non-empty. ``header``: its header parses. ``decode``: full read.
    Volume samples (``view`` set): ``header`` finds and orders the series, ``decode`` renders the plane."""
    if view:
        return check_view(path, index, level, view)
    return check_image(path, index, level)
