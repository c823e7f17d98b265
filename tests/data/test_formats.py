"""The formats table (medclipsvd/data/readers/formats.py, issue 17): a new file format is one module plus one row,
and then a custom dataset of such files loads through `load_dataset` and reads through `read_image`."""
import sys
from pathlib import Path

import numpy as np
import pytest

from medclipsvd.data.readers import formats

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy_row(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    row = formats.Format("toy", (".toy",), ("toy_format", "read_toy"), ("toy_format", "check_toy"))
    monkeypatch.setitem(formats.FORMATS, "toy", row)  # the one table every reader consults
    yield row
    sys.modules.pop("toy_format", None)


def _write_toy_dataset(root: Path, n: int = 6) -> dict[str, int]:
    greys = {}
    for c, label in enumerate(("cyst", "solid")):
        (root / label).mkdir(parents=True)
        for i in range(n):
            grey = 40 * c + i
            (root / label / f"p{c}{i}.toy").write_text(f"TOY 5 7 {grey}")
            greys[f"p{c}{i}.toy"] = grey
    return greys


def test_a_toy_format_is_one_module_and_one_row(toy_row, tmp_path):
    from medclipsvd.data import load_dataset
    from medclipsvd.data.readers.dispatch import read_image
    from medclipsvd.data.samples import read_sample

    greys = _write_toy_dataset(tmp_path / "data")
    assert formats.file_kind(tmp_path / "data" / "cyst" / "p00.toy") == "toy"
    splits = load_dataset("custom", tmp_path / "data")
    samples = [s for sp in ("train", "val", "test") for s in splits.split(sp)]
    assert sorted(Path(s.path).name for s in samples) == sorted(greys)
    assert list(splits.classnames) == ["cyst", "solid"]
    for s in samples:
        img = read_sample(s)
        assert img.shape == (5, 7, 3) and img.dtype == np.float32
        np.testing.assert_array_equal(img, np.float32(greys[Path(s.path).name] / 255.0))
    assert read_image(str(tmp_path / "data" / "solid" / "p15.toy"))[0, 0, 0] == np.float32(45 / 255.0)


def test_without_the_row_toy_files_are_not_images(tmp_path):
    from medclipsvd.data import load_dataset
    from medclipsvd.errors import DataError

    _write_toy_dataset(tmp_path / "data")
    assert formats.file_kind(tmp_path / "data" / "cyst" / "p00.toy") == formats.FALLBACK
    with pytest.raises(DataError):
        load_dataset("custom", tmp_path / "data")


def test_the_rows_keep_the_kinds_and_suffixes():
    assert list(formats.FORMATS) == ["npz", "nifti", "dicom", "pil"]
    assert formats.file_kind("a/b.NII.GZ") == "nifti" and formats.file_kind("x.npz::train_images") == "npz"
    assert formats.file_kind("scan.DCM") == "dicom" and formats.file_kind("photo.jpeg") == "pil"
    assert set(formats.image_suffixes()) >= {".png", ".dcm", ".nii", ".nii.gz", ".npz"}


def test_dicom_is_found_by_its_preamble_without_an_extension(tmp_path):
    f = tmp_path / "IM0001"
    f.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert formats.file_kind(f) == "dicom"
    g = tmp_path / "IM0002"
    g.write_bytes(b"\0" * 200)
    assert formats.file_kind(g) == "pil"
