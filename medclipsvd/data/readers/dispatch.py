"""``read_image``: every supported file type to one float32 HxWx3 image in [0, 1], and ``check_image``,
the cheap check behind ``data check``.

Dispatch goes through the formats table (formats.py): by name, then by content (a DICOM file may have no
extension). Every failure is a ``DataError`` naming the file, the problem and what to do. Volumes (DICOM
series, 3-D NIfTI) are read by ``data.volumes``; ``data.samples`` picks between the two for a ``Sample``."""
from __future__ import annotations

import os

import numpy as np

from medclipsvd.data.readers.common import _check_file, check_image_size
from medclipsvd.data.readers.formats import FORMATS, file_kind
from medclipsvd.data.types import NPZ_KEY_SEP
from medclipsvd.errors import DataError


def read_image(path: str | os.PathLike, index: int | None = None) -> np.ndarray:
    """Read one image as float32 HxWx3 in [0, 1].

    * PNG/JPEG/TIFF/BMP via Pillow (16-bit keeps its precision; ``index`` = TIFF page).
    * DICOM via pydicom (``medclipsvd.data.readers.dicom``; ``index`` = frame, default the middle frame).
    * NIfTI via nibabel (``medclipsvd.data.readers.nifti``; ``index`` = axial slice, default the middle one).
    * MedMNIST ``.npz``: path ``file.npz::train_images`` and ``index`` = row.
    Grey images are repeated to three channels. Raises ``DataError`` for anything unreadable."""
    p = os.fspath(path)
    img = FORMATS[file_kind(p)].read(p, index)  # the formats table (formats.py) names each kind's reader
    # every reader checks the size from the header before decoding; this holds for whatever it returns,
    # before the transforms resize it
    check_image_size(p, img.shape[1], img.shape[0])
    return img


def check_image(path: str, index: int | None = None, level: str = "header") -> str | None:
    """Cheap readability check of one 2-D image file: ``None`` if fine, else the reason.

    ``exists``: the file exists and is non-empty. ``header``: its header parses. ``decode``: full read."""
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
