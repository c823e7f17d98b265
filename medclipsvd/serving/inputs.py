"""What a model accepts as one input image, depending on who sends it.

The caller of `medclipsvd predict` or of the Python API owns the disk: any path it names is read
(`PathPolicy.local()`). A client of `mlflow models serve` does not: by default the served pyfunc takes pixel
arrays and encoded image files only (raw bytes, base64 text or a `data:` URI of a PNG, JPEG or DICOM file),
never a server-side path. A model registered with `--serve-root DIR` also reads paths under DIR (relative
to it, or absolute), confined like data roots (`medclipsvd.data.sources.confine.RootGuard`: no `..`, no symlink out).
For a served model every path that cannot be used - outside the root, missing, unreadable, not an image -
gets the same one-line answer, so answers do not reveal which server files exist, and no answer names a
server path."""
from __future__ import annotations

import base64
import binascii
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medclipsvd.errors import DataError, MedClipSVDError

MAX_ENCODED_BYTES = 64 * 2**20  # one encoded image; a DICOM CT slice is ~0.5 MB, a mammogram ~50 MB
MAX_FOLDER_ENTRIES = 10_000  # a served series folder; the serving root itself is no series
_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png", "PNG"), (b"\xff\xd8\xff", ".jpg", "JPEG"))


@dataclass(frozen=True)
class PathPolicy:
    """Which file paths an input may name: none (a served model's default), those under `root`, or any."""

    root: Path | None = None
    anywhere: bool = False

    @classmethod
    def local(cls) -> "PathPolicy":
        return cls(anywhere=True)

    @classmethod
    def under(cls, root: str | os.PathLike | None) -> "PathPolicy":
        return cls(root=Path(root)) if root else cls()


def check_serve_root(serve_root: str | os.PathLike | None) -> str | None:
    """--serve-root: an absolute folder on the serving machine (it need not exist here), never `/`."""
    if serve_root is None:
        return None
    text = str(serve_root).strip()
    if not text or not os.path.isabs(text):
        raise MedClipSVDError(f"--serve-root {str(serve_root)!r}: give an absolute folder on the serving machine "
                              "(e.g. --serve-root /srv/incoming); paths clients send are read only under it")
    root = os.path.normpath(text)
    if root == os.path.dirname(root):
        raise MedClipSVDError(f"--serve-root {root}: the file-system root would let clients read every file of the "
                              "server; give the folder that holds the images to classify")
    return root


def _kind(data: bytes) -> tuple[str, str] | None:
    """(file suffix, format name) of encoded image bytes, from their signature."""
    for magic, suffix, name in _MAGIC:
        if data.startswith(magic):
            return suffix, name
    if data[128:132] == b"DICM":  # DICOM Part 10: 128-byte preamble, then "DICM"
        return ".dcm", "DICOM"
    return None


def _b64decode(text: str, row: int) -> bytes:
    if len(text) > MAX_ENCODED_BYTES * 4 // 3 + 4:
        raise DataError(f"input row {row}: the encoded image is larger than {MAX_ENCODED_BYTES >> 20} MiB")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"input row {row}: the data: URI's payload is not valid base64") from None


def encoded_image(item, row: int) -> bytes | None:
    """The image file bytes in `item` (bytes, a `data:...;base64,` URI, or base64 text of a PNG, JPEG or
    DICOM file), or None when `item` is not an encoded image (a path, an array)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if not isinstance(item, str):
        return None
    text = item.strip()
    if text[:5].lower() == "data:":
        header, sep, payload = text.partition(",")
        if not sep or not header.lower().endswith(";base64"):
            raise DataError(f"input row {row}: a data: URI must carry base64 (data:image/png;base64,...)")
        return _b64decode(payload, row)
    # Plain base64 is told from a path by what it decodes to: an image signature (a file name with a dot or
    # a path of the wrong length is not base64 at all; "/etc/passwd" decodes to no image)
    if len(text) < 16 or len(text) % 4:
        return None
    if len(text) > MAX_ENCODED_BYTES * 4 // 3 + 4:
        raise DataError(f"input row {row}: the input is larger than an encoded image may be "
                        f"({MAX_ENCODED_BYTES >> 20} MiB)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _kind(data) else None


def _decoded_views(data: bytes, row: int, view, index) -> list[np.ndarray]:
    """The views of an encoded image, read by the same readers as files (pixel limits, DICOM rescale and
    windowing, multi-frame handling); read from a private temporary file whose name never reaches a message."""
    from medclipsvd.data.inputs import read_input_views

    kind = _kind(data)
    if kind is None:
        raise DataError(f"input row {row}: the encoded data is not a PNG, JPEG or DICOM file")
    suffix, name = kind
    with tempfile.TemporaryDirectory(prefix="medclipsvd-input-") as tmp:
        path = os.path.join(tmp, "image" + suffix)
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            return read_input_views(path, view, index)
        except MedClipSVDError as exc:
            detail = str(exc).replace(path, "the image").replace(tmp, "")
            raise DataError(f"input row {row}: the encoded {name} image cannot be used: {detail}") from None
        except Exception:  # a decoder's own error: its text may name the temporary file
            raise DataError(f"input row {row}: the encoded {name} image cannot be decoded") from None


def refused_path_message(row: int, policy: PathPolicy) -> str:
    """The one answer for every path a served model does not read: the same whether the file exists,
    is missing, lies outside the root or is not an image."""
    if policy.root is None:
        return (f"input row {row}: not a pixel array or an encoded image; send the image itself (a pixel array, "
                "or a PNG, JPEG or DICOM file as base64 or a data: URI): this model reads no file paths")
    return (f"input row {row}: no readable image at that path under this model's serving root (paths outside "
            "it, missing files and unreadable files get this same answer); send the image itself (a pixel "
            "array, or a PNG, JPEG or DICOM file as base64) or a path relative to the serving root")


def read_item(item, index, row: int, policy: PathPolicy, view) -> list[np.ndarray] | None:
    """The views of one input given as encoded bytes or a path, or None when it is neither (an array)."""
    data = encoded_image(item, row)
    if data is not None:
        return _decoded_views(data, row, view, index)
    if not isinstance(item, (str, os.PathLike)):
        return None
    from medclipsvd.data.inputs import read_input_views

    if policy.anywhere:
        return read_input_views(item, view, index)
    if policy.root is None:
        raise DataError(refused_path_message(row, policy))
    path = _confined(os.fspath(item), policy.root)
    if path is None:
        raise DataError(refused_path_message(row, policy))
    from medclipsvd.data.volumes.masks import search_within

    try:
        with search_within(policy.root):  # --slices roi / +crop: a series' mask is looked for under the root only
            return read_input_views(path, view, index)
    except Exception:  # missing, unreadable, not an image: answered like a path outside the root
        raise DataError(refused_path_message(row, policy)) from None


def _confined(text: str, root: Path) -> str | None:
    """`text` (relative to `root`, or absolute) as a path under the root, or None."""
    from medclipsvd.data.sources.confine import RootGuard
    from medclipsvd.data.volumes.series import SERIES_SEP

    text = text.strip()
    if not text or "\x00" in text:
        return None
    full = text if os.path.isabs(text) else os.path.join(str(root), text)
    guard = RootGuard.for_root(root)
    base = full.split(SERIES_SEP)[0]
    if guard.violation(base) is not None:
        return None
    if os.path.isdir(base):  # a series folder: every entry in it must stay under the root too
        seen = 0
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                seen += 1
                if seen > MAX_FOLDER_ENTRIES or guard.violation(os.path.join(dirpath, name)) is not None:
                    return None
    return full
