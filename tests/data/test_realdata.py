"""Acceptance on the real public data beside the repository (../shared/data); skipped when it is absent."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medclipsvd.data import dataset_info, load_dataset, read_image, read_split_json
from medclipsvd.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data not available at {SHARED}")]
BIO = SHARED / "biomedical"
PARTIAL = ["CTKidney", "COVID_19", "LungColon", "KneeXray"]


def _cli(*args):
    from medclipsvd.cli.app import app

    return CliRunner().invoke(app, ["data", *args])


def test_busi_official_split_complete():
    s = load_dataset("BUSI", BIO, verify="decode")
    assert s.counts() == {"train": 389, "val": 155, "test": 236}
    assert s.report.complete and s.classnames == ["benign tumor", "malignant tumor", "normal scan"]


def test_busi_data_check_cli_reports_complete():
    r = _cli("check", "--pipeline", "BUSI", "--root", str(BIO), "--verify", "header")
    assert r.exit_code == 0, r.output
    assert "result: complete" in r.output and "loaded: train 389, val 155, test 236" in r.output


@pytest.mark.parametrize("name", PARTIAL)
def test_partial_roots_fail_then_pass_with_allow_missing(name):
    r = _cli("check", "--pipeline", name, "--root", str(BIO), "--verify", "header")
    assert r.exit_code == 1, r.output
    assert "result: FAILED - entries are missing" in r.output
    with pytest.raises(DataError) as err:
        load_dataset(name, BIO)
    report = err.value.report
    classes = dataset_info(name).classnames
    for c in classes:  # per-class missing counts, and they add up
        row = report.rows[("train", c)]
        assert row.listed == row.present + row.missing + row.unreadable + row.mislabelled
    assert report.total("missing") > 0 and report.total("present") > 0 and report.total("mislabelled") == 0
    ok = _cli("check", "--pipeline", name, "--root", str(BIO), "--verify", "header", "--allow-missing")
    assert ok.exit_code == 0, ok.output
    assert "usable with --allow-missing" in ok.output
    s = load_dataset(name, BIO, allow_missing=True)
    assert sum(s.counts().values()) == report.total("present")


def test_brain_tumor_mri_folder_dataset():
    root = SHARED / "folders" / "brain_tumor_mri"
    s = load_dataset("custom", root, seed=0)
    assert s.classnames == ["glioma tumor", "meningioma tumor", "no tumor", "pituitary tumor"]
    n_files = sum(1 for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert sum(s.counts().values()) == n_files
    assert all("/test/" in x.path for x in s.test) and s.counts()["val"] > 0
    img = read_image(s.train[0].path)
    assert img.shape[2] == 3 and np.isfinite(img).all()


def test_pneumoniamnist_npz():
    s = load_dataset("pneumoniamnist", SHARED / "medmnist")
    assert s.counts() == {"train": 4708, "val": 524, "test": 624}
    img = read_image(s.test[5].path, s.test[5].index)
    assert img.shape == (28, 28, 3)


def test_shared_dicoms_load_at_their_documented_size():
    sizes = {"CT_small.dcm": (128, 128, 3), "MR_small.dcm": (64, 64, 3), "liver_1frame.dcm": (512, 512, 3)}
    assert {p.name: read_image(p).shape for p in (SHARED / "dicom").glob("*.dcm")} == sizes


def test_eurosat_through_coop_split():
    with pytest.raises(DataError):
        load_dataset("eurosat", SHARED / "natural")
    s = load_dataset("eurosat", SHARED / "natural", allow_missing=True)
    rep = s.report
    assert s.counts() == {"train": 1000, "val": 500, "test": 8100}
    assert rep.total("missing", "test") == 0 and rep.total("present", "test") == 8100
    assert rep.dropped["train"] == 13500 - 1000 and rep.dropped["val"] == 5400 - 500
    assert s.classnames[0] == "Annual Crop Land"


COOP = {"Caltech101": "splits/split_zhou_Caltech101.json", "OxfordPets": "splits/split_zhou_OxfordPets.json",
        "StanfordCars": "splits/split_zhou_StanfordCars.json", "Flowers102": "splits/split_zhou_OxfordFlowers.json",
        "UCF101": "splits/split_zhou_UCF101.json", "DTD": "dtd/split_zhou_DescribableTextures.json",
        "EuroSAT": "eurosat/split_zhou_EuroSAT.json"}


@pytest.mark.parametrize("name,rel", COOP.items())
def test_coop_split_files_match_the_registry(name, rel):
    info = dataset_info(name)
    data = read_split_json(SHARED / "natural" / rel)
    assert {s: len(v) for s, v in data.items()} == info.counts
    labels = {item[1]: item[2] for s in data.values() for item in s}
    assert len(labels) == info.num_classes
    assert [labels[i] for i in range(info.num_classes)] == info.classnames


@pytest.mark.parametrize("name", ["BTMRI", "BUSI", "CHMNIST", "COVID_19", "CTKidney", "DermaMNIST", "KneeXray",
                                  "Kvasir", "LungColon", "RETINA"])
def test_biomedical_split_files_match_the_registry(name):
    info = dataset_info(name)
    data = json.loads((SHARED / "splits" / f"split_{name}.json").read_text())
    assert {s: len(v) for s, v in data.items()} == info.counts
    labels = {item[1]: item[2] for s in data.values() for item in s}
    assert [labels[i] for i in range(len(labels))] == info.classnames


def test_imagenet_classnames_file_parses():
    from medclipsvd.data.sources.layouts import _read_classnames_txt

    names = _read_classnames_txt(SHARED / "natural" / "splits" / "imagenet" / "classnames.txt")
    assert len(names) == 1000 and names["n01440764"] == "tench" and not any("\r" in v for v in names.values())
