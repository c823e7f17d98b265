"""DICOM reading rules (rescale, window, VOI LUT, MONOCHROME1, frames, bit depths, compression), rejection
messages, and that no patient tag ever reaches a message, a warning or a log."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless,
                         SecondaryCaptureImageStorage, generate_uid)

from medclipsvd.data import read_image
from medclipsvd.data.readers.dicom import apply_window
from medclipsvd.errors import DataError

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-93125", "PatientBirthDate": "19700101",
           "InstitutionName": "St Example Hospital", "AccessionNumber": "ACC77321"}


def make_dicom(path, arr, photometric="MONOCHROME2", bits_stored=None, sop=CTImageStorage, **elements):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop, ds.file_meta.MediaStorageSOPInstanceUID
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.set_pixel_data(arr, photometric, bits_stored or arr.dtype.itemsize * 8)
    for k, v in elements.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


RAW = np.array([[0, 1000], [2000, 3000]], np.uint16)
HU = RAW.astype(float) - 1024.0


def ps33_voi(x, c: float, w: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 written out element by element from the standard's pseudo-code, with
    ymin = 0 and ymax = 1: the expected values of every window test (independent of apply_window)."""
    import math

    out = []
    for v in np.asarray(x, dtype=float).ravel().tolist():
        if function == "LINEAR":  # w == 1 never reaches the last branch: a threshold at c - 0.5
            if v <= c - 0.5 - (w - 1) / 2:
                y = 0.0
            elif v > c - 0.5 + (w - 1) / 2:
                y = 1.0
            else:
                y = (v - (c - 0.5)) / (w - 1) + 0.5
        elif function == "LINEAR_EXACT":
            if v <= c - w / 2:
                y = 0.0
            elif v > c + w / 2:
                y = 1.0
            else:
                y = (v - c) / w + 0.5
        elif function == "SIGMOID":
            y = 1.0 / (1.0 + math.exp(-4.0 * (v - c) / w))
        else:
            raise ValueError(function)
        out.append(y)
    return np.array(out).reshape(np.shape(x))


@pytest.mark.parametrize("name,elements,expected", [
    ("window", dict(RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400),
     ps33_voi(HU, 40, 400)),
    ("first-of-multiple-windows", dict(RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=[40, 500],
                                       WindowWidth=[400, 2000]), ps33_voi(HU, 40, 400)),
    ("window-inside-its-ramp", dict(RescaleSlope=0.25, RescaleIntercept=-500, WindowCenter=-120.5,
                                    WindowWidth=900), ps33_voi(RAW * 0.25 - 500, -120.5, 900)),
    ("linear-exact", dict(RescaleSlope=0.5, RescaleIntercept=-600, WindowCenter=0, WindowWidth=1200,
                          VOILUTFunction="LINEAR_EXACT"), ps33_voi(RAW * 0.5 - 600, 0, 1200, "LINEAR_EXACT")),
    ("no-window-minmax", dict(RescaleSlope=2, RescaleIntercept=-10), (RAW - 0) / 3000.0),
    ("monochrome1", dict(PhotometricInterpretation="MONOCHROME1"), 1.0 - RAW / 3000.0),
    ("sigmoid", dict(WindowCenter=1500, WindowWidth=1000, VOILUTFunction="SIGMOID"),
     1 / (1 + np.exp(-4 * (RAW - 1500.0) / 1000))),
])
def test_grey_pipeline(tmp_path, name, elements, expected):
    p = make_dicom(tmp_path / f"{name}.dcm", RAW, bits_stored=12, **elements)
    out = read_image(p)
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[:, :, 0], expected, atol=1e-6)


def test_window_formula_matches_the_standard():
    # PS3.3 C.11.2.1.2.1 with c=40, w=400 by hand: x <= 39.5 - 199.5 = -160 -> 0, x > 39.5 + 199.5 = 239 -> 1,
    # else (x - 39.5) / 399 + 0.5
    x = np.array([-160.0, -159.5, -100.0, 39.5, 140.0, 238.5, 239.0, 239.5, 240.0])
    expected = [0.0, 0.5 / 399, 60 / 399, 0.5, 0.5 + 100.5 / 399, 0.5 + 199 / 399, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(apply_window(x, 40, 400), expected, rtol=0, atol=1e-6)
    # w = 1 is a threshold at c - 0.5; w = 2 has one step between
    np.testing.assert_allclose(apply_window(np.array([9.0, 9.5, 9.6, 10.0]), 10, 1), [0, 0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(apply_window(np.array([8.5, 9.0, 9.5, 10.0, 10.5]), 10, 2), [0, 0, 0.5, 1, 1],
                               atol=1e-6)


@pytest.mark.parametrize("function,c,w", [(f, c, w) for f in ("LINEAR", "LINEAR_EXACT", "SIGMOID")
                                          for c, w in [(40, 400), (-600, 1500), (10, 2), (2047.5, 4096),
                                                       (-120.25, 35.5)]] + [("LINEAR", 0.5, 1)])
def test_window_functions_match_the_standard_pseudo_code(function, c, w):
    # every value around the ramp's ends and inside it, plus far outside
    edges = [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2, c - w / 2, c + w / 2, c - 0.5, c]
    x = np.unique(np.concatenate([np.add.outer(edges, [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]).ravel(),
                                  np.linspace(c - 2 * w, c + 2 * w, 257)]))
    np.testing.assert_allclose(apply_window(x, c, w, function), ps33_voi(x, c, w, function), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype,bits,photometric", [(np.uint8, 8, "MONOCHROME2"), (np.uint16, 12, "MONOCHROME2"),
                                                    (np.uint16, 16, "MONOCHROME2"), (np.int16, 16, "MONOCHROME2")])
def test_bit_depths(tmp_path, dtype, bits, photometric):
    info = np.iinfo(dtype)
    hi = min(info.max, 2 ** bits - 1) if info.min == 0 else 2 ** (bits - 1) - 1
    lo = 0 if info.min == 0 else -(2 ** (bits - 1))
    arr = np.array([[lo, hi], [(lo + hi) // 2, lo]], dtype)
    out = read_image(make_dicom(tmp_path / "b.dcm", arr, photometric, bits_stored=bits))
    np.testing.assert_allclose(out[:, :, 0], (arr.astype(float) - lo) / (hi - lo), atol=1e-6)


def test_rgb(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out = read_image(make_dicom(tmp_path / "c.dcm", arr, "RGB", sop=SecondaryCaptureImageStorage))
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


def _frames():
    return np.stack([np.arange(6, dtype=np.uint16).reshape(2, 3) + 100 * f for f in range(3)])


def test_multiframe_policy(tmp_path):
    p = make_dicom(tmp_path / "mf.dcm", _frames(), WindowCenter=150, WindowWidth=400)
    default, last = read_image(p), read_image(p, 2)
    np.testing.assert_allclose(default[:, :, 0], ps33_voi(_frames()[1], 150, 400), atol=1e-6)
    np.testing.assert_allclose(last[:, :, 0], ps33_voi(_frames()[2], 150, 400), atol=1e-6)
    with pytest.raises(DataError, match="frame 3 requested but the file has 3 frame"):
        read_image(p, 3)


def test_per_frame_functional_groups(tmp_path):
    items = []
    for c in (10.0, 120.0, 250.0):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = c, 20.0
        fg = Dataset()
        fg.FrameVOILUTSequence = Sequence([voi])
        items.append(fg)
    p = make_dicom(tmp_path / "enh.dcm", _frames(), PerFrameFunctionalGroupsSequence=Sequence(items))
    np.testing.assert_allclose(read_image(p, 2)[:, :, 0], ps33_voi(_frames()[2], 250, 20), atol=1e-6)
    np.testing.assert_allclose(read_image(p, 0)[:, :, 0], ps33_voi(_frames()[0], 10, 20), atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_equals_uncompressed(tmp_path, syntax):
    from pydicom import dcmread

    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)  # J2K needs more than 8x8
    plain = make_dicom(tmp_path / "plain.dcm", arr, bits_stored=12)
    ds = dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "comp.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "comp.dcm"), read_image(plain))


def test_unsupported_transfer_syntax(tmp_path):
    p = make_dicom(tmp_path / "mpeg.dcm", RAW)
    from pydicom import dcmread

    ds = dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder on PyPI for pydicom
    ds.PixelData = encapsulate([b"\x00" * 8])
    ds.save_as(p)
    with pytest.raises(DataError, match=r"mpeg\.dcm: unsupported transfer syntax MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100.*Convert"):
        read_image(p)


def test_no_pixel_data(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName = PATIENT["PatientName"]
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match=r"sr\.dcm: DICOM has no pixel data \(SOP class Basic Text SR Storage\)"):
        read_image(tmp_path / "sr.dcm")


def test_truncated_pixel_data_message_has_no_patient_tags(tmp_path, caplog, recwarn):
    p = make_dicom(tmp_path / "trunc.dcm", np.zeros((64, 64), np.uint16))
    p.write_bytes(p.read_bytes()[:-3000])
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(DataError) as err:
            read_image(p)
    text = str(err.value) + caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "trunc.dcm" in str(err.value)
    for value in PATIENT.values():
        assert value not in text and value.split("^")[0] not in text


def test_invalid_tag_values_are_not_echoed(tmp_path, caplog, recwarn):
    # an invalid IS value in a numeric tag makes pydicom warn with the value; nothing of it may surface
    p = make_dicom(tmp_path / "bad.dcm", RAW)
    raw = p.read_bytes().replace(b"19700101", b"19xx0101")  # invalid DA in PatientBirthDate
    p.write_bytes(raw)
    with caplog.at_level(logging.DEBUG):
        out = read_image(p)
    assert np.isfinite(out).all()
    text = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "19xx0101" not in text and "Doe" not in text


def test_quiet_reading_is_thread_safe_and_restores_settings(tmp_path):
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from pydicom import config

    p = make_dicom(tmp_path / "t.dcm", np.zeros((32, 32), np.uint16), WindowCenter=0, WindowWidth=10)
    mode, n_filters = config.settings.reading_validation_mode, len(warnings.filters)
    seen = []

    def read(_):
        seen.append(config.settings.reading_validation_mode)
        return read_image(p)

    with ThreadPoolExecutor(4) as pool:
        assert all(np.isfinite(x).all() for x in pool.map(read, range(32)))
    assert config.settings.reading_validation_mode == mode and len(warnings.filters) == n_filters


# --- issue 10, item 11: one-line messages with the right cause, no doubled UID, quiet child loggers ---------

def _one_line_no_phi(text: str) -> None:
    assert "\n" not in text
    for value in PATIENT.values():
        assert value not in text and value.split("^")[0] not in text


def test_file_cut_before_its_pixel_data_is_reported_as_truncated(tmp_path):
    p = make_dicom(tmp_path / "cut.dcm", np.zeros((64, 64), np.uint16))
    data = p.read_bytes()
    p.write_bytes(data[:data.index(b"Doe^Jane") + 3])  # ends inside the PatientName value
    for check in (lambda: read_image(p), lambda: __import__("medclipsvd.data.readers.dicom", fromlist=["x"]).check_dicom_header(str(p))):
        with pytest.raises(DataError, match=r"cut\.dcm: DICOM file is truncated") as err:
            check()
        _one_line_no_phi(str(err.value))
        assert "no pixel data" not in str(err.value)


def test_file_cut_inside_its_pixel_data_is_reported_as_truncated(tmp_path):
    p = make_dicom(tmp_path / "cut.dcm", np.zeros((64, 64), np.uint16))
    p.write_bytes(p.read_bytes()[:-3000])
    with pytest.raises(DataError, match=r"cut\.dcm: DICOM file is truncated \(\d+ bytes; 3000 bytes short"):
        read_image(p)


def test_unknown_transfer_syntax_uid_is_printed_once(tmp_path):
    p = make_dicom(tmp_path / "odd.dcm", RAW)
    from pydicom import dcmread

    ds = dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"  # private, not in pydicom's UID dictionary
    ds.PixelData = encapsulate([b"\x00" * 8])
    ds.save_as(p)
    with pytest.raises(DataError) as err:
        read_image(p)
    assert str(err.value).count("1.2.3.4.5.6.7") == 1, str(err.value)
    _one_line_no_phi(str(err.value))


def test_decoder_failures_are_one_line_and_never_reach_host_loggers(tmp_path, caplog):
    # garbage JPEG 2000 data: every plugin fails, pydicom's pixels.* loggers log tracebacks, and its message
    # lists the plugins on several lines (once cut mid-number at 200 characters)
    p = make_dicom(tmp_path / "j2k.dcm", RAW)
    from pydicom import dcmread

    ds = dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    ds.save_as(p)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(DataError, match=r"j2k\.dcm: DICOM pixel data cannot be decoded") as err:
            read_image(p)
    msg = str(err.value)
    _one_line_no_phi(msg)
    assert msg.endswith("remove it from the dataset."), msg
    assert not [r for r in caplog.records if r.name.startswith("pydicom")], caplog.text[:500]


def test_file_without_transfer_syntax_is_read_with_the_encoding_it_was_parsed_with(tmp_path):
    p = make_dicom(tmp_path / "nots.dcm", RAW, WindowCenter=1500, WindowWidth=3000)
    from pydicom import dcmread

    ds = dcmread(p)
    del ds.file_meta.TransferSyntaxUID
    ds.save_as(p, enforce_file_format=False, implicit_vr=False, little_endian=True)
    out = read_image(p)
    assert out.shape == (2, 2, 3) and np.isfinite(out).all()


def test_dicom_larger_than_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    p = make_dicom(tmp_path / "big.dcm", np.zeros((64, 64), np.uint16))
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match=r"big\.dcm: image is 64x64 = .* above the limit .*MEDCLIPSVD_MAX_IMAGE_PIXELS"):
        read_image(p)


# --- what mutation testing of the DICOM rescale/window code asked for (docs/mutation.md) -------------------------
# A window is fixed in HU, so these values show the rescale (min..max scaling would hide slope and intercept).

@pytest.mark.parametrize("name,elements,hu", [
    ("slope-only", dict(RescaleSlope=2, WindowCenter=3000, WindowWidth=6000), RAW * 2.0),
    ("intercept-only", dict(RescaleIntercept=-1024, WindowCenter=40, WindowWidth=4000), RAW - 1024.0),
    ("empty-slope", dict(RescaleSlope=None, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=4000), RAW - 1024.0),
    ("empty-intercept", dict(RescaleSlope=2, RescaleIntercept=None, WindowCenter=3000, WindowWidth=6000), RAW * 2.0),
])
def test_rescale_defaults(tmp_path, name, elements, hu):
    out = read_image(make_dicom(tmp_path / f"{name}.dcm", RAW, bits_stored=12, **elements))
    c, w = elements["WindowCenter"], elements["WindowWidth"]
    np.testing.assert_allclose(out[:, :, 0], ps33_voi(hu, c, w), atol=1e-6)


def test_per_frame_rescale_and_window(tmp_path):
    items = []
    for slope, inter in ((1.0, 0.0), (2.0, -100.0), (0.5, 50.0)):
        pvt, voi = Dataset(), Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept = slope, inter
        voi.WindowCenter, voi.WindowWidth = 200.0, 600.0
        fg = Dataset()
        fg.PixelValueTransformationSequence = Sequence([pvt])
        fg.FrameVOILUTSequence = Sequence([voi])
        items.append(fg)
    # a top-level Window Center without its Width does not hide the frames' own windows
    p = make_dicom(tmp_path / "pf.dcm", _frames(), PerFrameFunctionalGroupsSequence=Sequence(items), WindowCenter=5)
    for f, (slope, inter) in enumerate(((1.0, 0.0), (2.0, -100.0), (0.5, 50.0))):
        np.testing.assert_allclose(read_image(p, f)[:, :, 0], ps33_voi(_frames()[f] * slope + inter, 200, 600),
                                   atol=1e-6, err_msg=f"frame {f}")


def _minmax(a):
    a = np.asarray(a, float)
    return (a - a.min()) / (a.max() - a.min())


@pytest.mark.parametrize("name,elements,expected", [
    ("width-0-ignored", dict(WindowCenter=1500, WindowWidth=0), _minmax(RAW)),
    ("width-1-threshold", dict(WindowCenter=1000, WindowWidth=1), (RAW > 999.5).astype(float)),
    ("empty-width-ignored", dict(WindowCenter=1500, WindowWidth=None), _minmax(RAW)),
    ("empty-center-ignored", dict(WindowCenter=None, WindowWidth=400), _minmax(RAW)),
])
def test_unusable_windows_fall_back_to_the_image_range(tmp_path, name, elements, expected):
    out = read_image(make_dicom(tmp_path / f"{name}.dcm", RAW, bits_stored=12, **elements))
    np.testing.assert_allclose(out[:, :, 0], expected, atol=1e-6)


def test_frame_window_without_width_falls_back_to_the_image_range(tmp_path):
    voi = Dataset()
    voi.WindowCenter = 150.0
    fg = Dataset()
    fg.FrameVOILUTSequence = Sequence([voi])
    p = make_dicom(tmp_path / "c.dcm", _frames(), PerFrameFunctionalGroupsSequence=Sequence([fg, fg, fg]))
    np.testing.assert_allclose(read_image(p, 1)[:, :, 0], _minmax(_frames()[1]), atol=1e-6)


def test_first_value_of_a_multi_valued_element():
    from medclipsvd.data.readers.dicom import _first

    assert _first([40.0, 500.0]) == 40.0 and _first("12.5") == 12.5
    assert _first([]) is None and _first(None) is None and _first("abc") is None


@pytest.mark.parametrize("center", ["NaN", "inf"])
def test_non_finite_window_center_falls_back_to_the_image_range(tmp_path, monkeypatch, center):
    from pydicom import config

    monkeypatch.setattr(config.settings, "writing_validation_mode", config.IGNORE)  # pydicom refuses to write it
    with pytest.warns(UserWarning, match="Invalid value for VR DS"):
        p = make_dicom(tmp_path / "c.dcm", RAW, bits_stored=12, WindowCenter=center, WindowWidth=400)
    np.testing.assert_allclose(read_image(p)[:, :, 0], _minmax(RAW), atol=1e-6)
