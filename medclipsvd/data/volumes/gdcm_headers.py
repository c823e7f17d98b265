"""The headers of a folder's DICOM files through GDCM's Scanner (python-gdcm): one pass over the files reads
only the wanted tags, which makes the cold read of a series about as fast as SimpleITK's own (pydicom's
per-file parse was the difference; docs/benchmarks.md).

pydicom stays the reference (``series._pydicom_fields``): a file's GDCM values become a header only where they
give exactly what pydicom would (``clean``; ``series._gdcm_fields`` converts them), and pydicom reads every other
file: files GDCM refuses (RT plans, SR), DiffusionBValue (binary FD, not given as a number), character sets
beyond ASCII/Latin-1/UTF-8 and any value that is not plain ASCII, a single-valued tag holding several values
(pydicom's text is then a list's), a number that does not parse as its VR (pydicom refuses the file or keeps
another text), leading blanks or control characters, and files without a SeriesInstanceUID whose SeriesNumber
is more than plain digits (their geometry signature keeps pydicom's text of it). Without python-gdcm, or with
MEDCLIPSVD_GDCM_HEADERS=0, pydicom reads every file. tests/data/test_gdcm_headers.py holds the two paths equal."""
from __future__ import annotations

import functools
import os
import re

GDCM_ENV = "MEDCLIPSVD_GDCM_HEADERS"  # "0": pydicom only (a check, or a GDCM build that misreads)
_CHARSET = "SpecificCharacterSet"
_PLAIN_CHARSETS = ("", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192")  # identical to ASCII for ASCII-only values
_DS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "WindowCenter", "WindowWidth",
       "RescaleSlope", "RescaleIntercept", "TriggerTime", "SliceThickness")
_IS = ("SeriesNumber", "NumberOfFrames", "TemporalPositionIdentifier", "AcquisitionNumber")
_MULTI = ("ImageType", *_DS, _CHARSET)  # the others pydicom gives as str() of a list when they hold several values
_INT = re.compile(r"[+-]?\d+")
_PADDING = " \0"


class _Fallback(Exception):
    """GDCM's value would not give pydicom's header: pydicom reads the file."""


def enabled() -> bool:
    if os.environ.get(GDCM_ENV, "1").strip() == "0":
        return False
    return _gdcm() is not None


@functools.cache
def _gdcm():
    try:
        import gdcm
    except ImportError:  # optional at run time: pydicom reads every header then
        return None
    gdcm.Trace.SetWarning(False)  # GDCM's warnings on odd files go to stderr and could quote values
    gdcm.Trace.SetError(False)
    return gdcm


@functools.cache
def _tags(keywords: tuple[str, ...]) -> dict:
    """The keywords (and SpecificCharacterSet) as GDCM tags, resolved through pydicom's dictionary."""
    from pydicom.datadict import tag_for_keyword

    gdcm = _gdcm()
    out = {}
    for k in dict.fromkeys((*keywords, _CHARSET)):
        t = tag_for_keyword(k)
        out[k] = gdcm.Tag(t >> 16, t & 0xFFFF)
    return out


def scan(paths: list[str], keywords: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """The raw text of the keywords' tags per file, for the files GDCM reads (one Scanner pass); {} when
    disabled or unavailable."""
    if not paths or not enabled():
        return {}
    gdcm, tags = _gdcm(), _tags(tuple(keywords))
    scanner = gdcm.Scanner()
    for t in tags.values():
        scanner.AddTag(t)
    try:
        if not scanner.Scan(list(paths)):
            return {}
    except Exception:  # a GDCM failure costs speed only: pydicom reads the files
        return {}
    out = {}
    for p in paths:
        if not scanner.IsKey(p):
            continue
        try:
            values = {k: scanner.GetValue(p, t) for k, t in tags.items()}
        except Exception:  # bytes SWIG cannot decode: pydicom decides
            continue
        out[p] = {k: v for k, v in values.items() if v is not None}
    return out


def clean(raw: dict[str, str]) -> dict[str, str] | None:
    """One file's values without their trailing padding; None where pydicom's reading could differ (then
    pydicom reads the file)."""
    try:
        return _clean(raw)
    except _Fallback:
        return None


def _clean(raw: dict[str, str]) -> dict[str, str]:
    if raw.get(_CHARSET, "").strip(_PADDING) not in _PLAIN_CHARSETS or "DiffusionBValue" in raw:
        raise _Fallback
    v = {}
    for k, s in raw.items():
        s = s.rstrip(_PADDING)
        if not s.isascii() or not s.isprintable() or s[:1].isspace() or ("\\" in s and k not in _MULTI):
            raise _Fallback
        v[k] = s
    for k in _DS:
        for part in v.get(k, "").split("\\") if v.get(k) else ():
            try:
                float(part)
            except ValueError:
                raise _Fallback from None
    for k in _IS:
        if v.get(k) and not all(_INT.fullmatch(x.strip()) for x in v[k].split("\\")):
            raise _Fallback
    if not v.get("SeriesInstanceUID", "").strip() and not re.fullmatch(r"\d*", v.get("SeriesNumber", "").strip()):
        raise _Fallback  # the geometry signature keeps pydicom's text of SeriesNumber: plain digits only here
    return v
