"""Data checks on broken roots: each bad input gives a message naming the file, the problem and the fix."""
from __future__ import annotations

import json
import re

import pytest

from data_synth import make_root, write_image
from medclipsvd.data import DataCheckError, dataset_info, load_dataset
from medclipsvd.errors import DataError


@pytest.fixture
def busi(tmp_path):
    make_root(tmp_path, dataset_info("BUSI"))
    return tmp_path


def _edit_split(root, fn):
    f = root / "BUSI" / "split_BUSI.json"
    data = json.loads(f.read_text())
    fn(data)
    f.write_text(json.dumps(data))


def test_complete_synthetic_root(busi):
    s = load_dataset("BUSI", busi, verify="decode")
    assert s.report.complete and s.report.ok and s.counts() == {"train": 3, "val": 3, "test": 3}


def test_missing_file(busi):
    (busi / "BUSI" / "BUSI" / "malignant_tumor" / "val0.png").unlink()
    with pytest.raises(DataCheckError) as err:
        load_dataset("BUSI", busi)
    msg = str(err.value)
    row = err.value.report.rows[("val", "malignant tumor")]
    assert (row.listed, row.present, row.missing, row.unreadable, row.mislabelled) == (1, 0, 1, 0, 0)
    assert re.search(r"val\s+malignant tumor\s+1\s+0\s+1\s+0\s+0\n", msg)
    assert "[val] malignant_tumor/val0.png: file not found" in msg and "--allow-missing" in msg
    s = load_dataset("BUSI", busi, allow_missing=True)
    assert s.counts() == {"train": 3, "val": 2, "test": 3} and s.report.dropped["val"] == 1
    assert "dropped 1 missing/unreadable" in s.report.format()


def test_zero_byte_file_is_unreadable(busi):
    (busi / "BUSI" / "BUSI" / "benign_tumor" / "test0.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"\[test\] benign_tumor/test0.png: empty file \(0 bytes\)"):
        load_dataset("BUSI", busi, verify="exists")
    assert load_dataset("BUSI", busi, allow_missing=True).counts()["test"] == 2


def test_truncated_file_found_by_decode(busi):
    p = write_image(busi / "BUSI" / "BUSI" / "normal_scan" / "train0.png", size=64)
    p.write_bytes(p.read_bytes()[:120])
    load_dataset("BUSI", busi, verify="exists")  # a stat cannot see truncation ...
    with pytest.raises(DataError, match=r"(?s)unreadable \(1\).*normal_scan/train0.png: image cannot be decoded"):
        load_dataset("BUSI", busi, verify="decode")  # ... decoding does


def test_label_outside_class_list(busi):
    _edit_split(busi, lambda d: d["train"].append(["benign_tumor/train0.png", 7, "benign tumor"]))
    with pytest.raises(DataError) as err:
        load_dataset("BUSI", busi, allow_missing=True)  # never dropped silently
    assert "label 7 is outside the class list (0..2)" in str(err.value)
    assert "split file or the registry is wrong" in str(err.value)


def test_classname_disagrees_with_label(busi):
    _edit_split(busi, lambda d: d["test"].__setitem__(0, ["benign_tumor/test0.png", 1, "benign tumor"]))
    with pytest.raises(DataError, match=r"classname 'benign tumor' disagrees with label 1 \('malignant tumor'\)"):
        load_dataset("BUSI", busi)


def test_malformed_split_entry(busi):
    _edit_split(busi, lambda d: d["val"].append(["only-a-path"]))
    with pytest.raises(DataError, match=r"split_BUSI.json: val\[3\] is \['only-a-path'\]; expected \[relative_path, label, classname\]"):
        load_dataset("BUSI", busi)


def test_split_file_not_json(busi):
    (busi / "BUSI" / "split_BUSI.json").write_text("{not json")
    with pytest.raises(DataError, match="split_BUSI.json: not valid JSON"):
        load_dataset("BUSI", busi)


def test_bad_verify_level(busi):
    with pytest.raises(DataError, match="verify must be one of"):
        load_dataset("BUSI", busi, verify="thorough")


def test_unsupported_dicom_in_a_custom_dataset_is_reported_by_check(tmp_path):
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    from test_dicom import RAW, make_dicom

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            make_dicom(tmp_path / c / f"{i}.dcm", RAW)
    p = tmp_path / "b" / "1.dcm"
    ds = dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([b"\x00" * 8])
    ds.save_as(p)
    with pytest.raises(DataError, match=r"(?s)unreadable \(1\).*b/1.dcm: unsupported transfer syntax MPEG2"):
        load_dataset("custom", tmp_path, fractions=(1, 0, 0))
