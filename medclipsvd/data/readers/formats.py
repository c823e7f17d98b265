"""THE table of image file formats: file kind -> how it is recognised, read and checked.

`file_kind` (which row a path belongs to), `read_image` (dispatch.py: the row's reader, then the shared size
check) and `check_image` (the row's header check, for `data check`) all go through `FORMATS`; a custom
dataset lists the files whose names match a row. A new format is one module in this package with
``read(path, index) -> float32 HxWx3 in [0, 1]`` (and optionally a header check) plus one row here
(tests/data/test_formats.py registers a toy format that way and reads it through `load_dataset`).

Rows name their functions as (module, name) so that recognising a file imports no decoder (pydicom,
nibabel, Pillow are imported when a file of their kind is read). The table is code, never read from a file."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from medclipsvd.data.types import NPZ_KEY_SEP


@dataclass(frozen=True)
class Format:
    kind: str
    suffixes: tuple[str, ...]             # lower-case name endings
    reader: tuple[str, str]               # (module, function): read(path, index) -> HxWx3 float32 in [0, 1]
    header: tuple[str, str] | None = None  # (module, function): check(path), raises DataError; None: none
    magic: tuple[int, bytes] | None = None  # (offset, bytes) that identify a file whose name says nothing
    listed: bool = True                   # a custom dataset lists files of this kind as images

    def read(self, path: str, index: int | None):
        return _function(self.reader)(path, index)

    def check_header(self, path: str) -> None:
        if self.header is not None:
            _function(self.header)(path)


def _function(where: tuple[str, str]):
    module, name = where
    return getattr(importlib.import_module(module), name)


# Order matters: the first row whose suffix matches wins, then the first whose magic bytes match; "pil" is
# the fallback (Pillow sniffs the content itself).
FORMATS: dict[str, Format] = {f.kind: f for f in (
    Format("npz", (".npz",), ("medclipsvd.data.readers.npz", "read_npz")),  # file.npz::array (MedMNIST)
    Format("nifti", (".nii", ".nii.gz"), ("medclipsvd.data.readers.nifti", "read_nifti"),
           ("medclipsvd.data.readers.nifti", "nifti_shape")),
    Format("dicom", (".dcm", ".dicom", ".dic"), ("medclipsvd.data.readers.dicom", "read_dicom"),
           ("medclipsvd.data.readers.dicom", "check_dicom_header"), magic=(128, b"DICM")),
    Format("pil", (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm"),
           ("medclipsvd.data.readers.pil", "read_pil"), ("medclipsvd.data.readers.pil", "check_pil_header")),
)}
FALLBACK = "pil"
# the name endings of two rows as they are at import, for callers that test one kind by name
PIL_EXTS = set(FORMATS["pil"].suffixes)
DICOM_EXTS = set(FORMATS["dicom"].suffixes)


def image_suffixes() -> tuple[str, ...]:
    """Every name ending a custom dataset lists as an image (the rows as they are now)."""
    return tuple(s for f in FORMATS.values() if f.listed for s in f.suffixes)


# value representations an explicit-VR DICOM element may open with (PS3.5 6.2)
_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR "
                 b"US UT UV".split())


def _raw_dicom(head: bytes) -> bool:
    """A DICOM data set without the 128-byte preamble and 'DICM' (old ACR-NEMA style exports and some PACS
    dumps): the file opens on a little-endian element of group 0002 (file meta) or 0008 (identification),
    explicit VR (two VR letters) or implicit VR (a plausible 4-byte length)."""
    if len(head) < 8 or head[0:2] not in (b"\x02\x00", b"\x08\x00") or head[3] != 0:
        return False
    return head[4:6] in _VRS or int.from_bytes(head[4:8], "little") < 4096


def file_kind(path: str | os.PathLike) -> str:
    """The kind (a key of FORMATS) from the name, else by the magic bytes (a DICOM file may have no
    extension, and no preamble), else the fallback."""
    p = os.fspath(path)
    if NPZ_KEY_SEP in p:
        return "npz"
    low = p.lower()
    for f in FORMATS.values():
        if low.endswith(f.suffixes):
            return f.kind
    magic = [f for f in FORMATS.values() if f.magic]
    if magic:
        try:
            import stat

            if not stat.S_ISREG(os.stat(p).st_mode):  # a FIFO would block the sniffing read; check_file says so
                return FALLBACK
            with open(p, "rb") as fh:
                head = fh.read(max(off + len(b) for off, b in (f.magic for f in magic)))
        except OSError:
            return FALLBACK
        for f in magic:
            off, sig = f.magic
            if head[off:off + len(sig)] == sig:
                return f.kind
        if _raw_dicom(head):
            return "dicom"
    return FALLBACK
