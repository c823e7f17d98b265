"""The DICOM corpus sweep: every file of pydicom's test corpus (and the three real files of ../shared/data/dicom
when present) has one expected outcome, derived from its own header read with pydicom or, for the five
broken files, stated with its reason: it loads at the header's Rows x Columns (and plain grey images at the
display values PS3.3 gives, to 1e-6), or it is refused with the specific error expected."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medclipsvd.data import read_image
from medclipsvd.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _dicom_files():
    from pydicom.data import get_testdata_files

    files = sorted((SHARED / "dicom").glob("*.dcm")) if SHARED.is_dir() else []
    for f in get_testdata_files():
        p = Path(f)
        if p.is_file() and (p.suffix.lower() == ".dcm" or (p.suffix == "" and p.read_bytes()[128:132] == b"DICM")):
            files.append(p)
    return files


# Files whose header describes a readable image but whose content is broken, each with the error it must
# raise (pydicom's test_files/README.txt describes them; pydicom's own pixel_array fails on the last three).
BROKEN = {
    "MR_truncated.dcm": "DICOM file is truncated",        # pixel data cut 62 bytes short
    "rtplan_truncated.dcm": "DICOM file is truncated",    # cut inside its last element
    "JPEG-lossy.dcm": "DICOM pixel data cannot be decoded",  # invalid SOS for sequential JPEG (JPGExtended.dcm: fixed)
    "JPEG2000-embedded-sequence-delimiter.dcm": "DICOM pixel data cannot be decoded",  # 4 code-stream bytes overwritten
    "badVR.dcm": "DICOM pixel data cannot be decoded",    # NumberOfFrames '1A' is not an integer
}


def _header(path: Path):
    """The file as pydicom reads it, independently of medclipsvd (no validation warnings)."""
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _expected_outcome(path: Path) -> tuple[str, object]:
    """("error", message fragment) or ("load", (rows, columns, 3)) from the file's own header."""
    if path.name in BROKEN:
        return "error", BROKEN[path.name]
    ds = _header(path)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return "error", "DICOM has no pixel data"
    if "Rows" not in ds or "Columns" not in ds:
        return "error", "DICOM has pixel data but no Rows/Columns"
    return "load", (int(ds.Rows), int(ds.Columns), 3)


def _corpus_id(path: Path) -> str:
    from pydicom.data import get_testdata_file

    root = Path(get_testdata_file("CT_small.dcm")).parent
    return f"pydicom/{path.relative_to(root)}" if path.is_relative_to(root) else f"shared/{path.name}"


CORPUS = [(p, *_expected_outcome(p)) for p in _dicom_files()]
LOADS = [pytest.param(p, shape, id=f"{_corpus_id(p)}-{shape[0]}x{shape[1]}") for p, kind, shape in CORPUS
         if kind == "load"]
REFUSED = [pytest.param(p, frag, id=f"{_corpus_id(p)}-{frag.removeprefix('DICOM ').split(' ')[0]}")
           for p, kind, frag in CORPUS if kind == "error"]


def _plain_grey(ds) -> bool:
    """Grey images whose display values follow from the header alone: Rescale Slope/Intercept, then the
    first Window Center/Width (LINEAR) or the image's min..max; no LUT sequences, no functional groups."""
    return (int(ds.get("SamplesPerPixel", 1)) == 1
            and str(ds.get("PhotometricInterpretation", "")) in ("MONOCHROME1", "MONOCHROME2")
            and str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR") == "LINEAR"
            and not any(k in ds for k in ("ModalityLUTSequence", "VOILUTSequence", "PerFrameFunctionalGroupsSequence",
                                          "SharedFunctionalGroupsSequence")))


def _first_value(v) -> float:
    from pydicom.multival import MultiValue

    return float(v[0] if isinstance(v, (MultiValue, list)) else v)


def _expected_grey(ds) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR, ymin 0, ymax 1) on the rescaled middle frame, element by element."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "excess padding to be removed" (MR_small_padded.dcm)
        arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[frames // 2]
    x = arr.astype(float) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
        y = np.array([0.0 if v <= c - 0.5 - (w - 1) / 2 else 1.0 if v > c - 0.5 + (w - 1) / 2
                      else (v - (c - 0.5)) / (w - 1) + 0.5 for v in x.ravel().tolist()]).reshape(x.shape)
    else:
        y = (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)
    return 1.0 - y if str(ds.PhotometricInterpretation) == "MONOCHROME1" else y


@pytest.mark.parametrize("path,shape", LOADS)
def test_dicom_loads_with_the_shape_its_header_gives(path, shape):
    img = read_image(path)
    assert img.shape == shape and img.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    ds = _header(path)
    if _plain_grey(ds):  # the display values themselves, from the header and the standard
        np.testing.assert_allclose(img[:, :, 0], _expected_grey(ds), rtol=0, atol=1e-6)
        assert (img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 0] == img[:, :, 2]).all()


@pytest.mark.parametrize("path,fragment", REFUSED)
def test_dicom_is_refused_for_its_reason(path, fragment):
    with pytest.raises(DataError) as err:
        read_image(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {fragment}"), msg
    assert "\n" not in msg


def test_the_corpus_is_the_expected_one():
    """The sweep covers what it claims: pydicom's test files (plus the 3 shared ones when present); every
    BROKEN entry is in it; the plain-grey value check runs on more than half of the loadable files."""
    names = {p.name for p, _, _ in CORPUS}
    assert {"CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "rtplan.dcm"} <= names and set(BROKEN) <= names
    assert len(LOADS) >= 85 and len(REFUSED) >= 70  # pydicom 3.0: 89 and 78 (+3 loads with ../shared/data)
    assert sum(_plain_grey(_header(p.values[0])) for p in LOADS) >= 50
