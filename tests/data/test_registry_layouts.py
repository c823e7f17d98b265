"""Every registered dataset, in every one of its registry layouts, read back from a tiny synthetic root."""
from __future__ import annotations

import pytest

from data_synth import SPLITS, WNIDS, class_names, make_root
from medclipsvd.data import dataset_info, list_datasets, load_dataset
from medclipsvd.errors import DataError

CASES = [(name, i) for name in list_datasets() for i in range(len(dataset_info(name).layouts))]


def test_registry_holds_the_benchmarks():
    assert list_datasets("biomedical") == ["BTMRI", "BUSI", "CHMNIST", "COVID_19", "CTKidney", "KneeXray",
                                           "Kvasir", "LungColon", "OCTMNIST", "RETINA"]
    assert sorted(list_datasets("natural")) == sorted(["Caltech101", "DTD", "EuroSAT", "FGVCAircraft", "Flowers102",
                                                       "Food101", "ImageNet", "OxfordPets", "StanfordCars",
                                                       "SUN397", "UCF101"])
    assert sorted(list_datasets("imagenet_variants")) == ["ImageNetA", "ImageNetR", "ImageNetSketch", "ImageNetV2"]
    assert list_datasets("extra") == ["DermaMNIST", "PneumoniaMNIST"]
    assert len(list_datasets()) == 27


@pytest.mark.parametrize("name,expected", [
    ("BTMRI", ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"]),
    ("OCTMNIST", ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal OCT scan"]),
    ("RETINA", ["diabetic retinopathy", "glaucoma", "cataract", "normal retina"]),
    ("KneeXray", ["healthy knee", "doubtful osteoarthritis", "minimal osteoarthritis", "moderate osteoarthritis",
                  "severe osteoarthritis"]),
])
def test_label_order(name, expected):
    assert dataset_info(name).classnames == expected


@pytest.mark.parametrize("name,protocol,template", [
    ("COVID_19", "few_shot", "a chest xray of {}."), ("COVID_19", "base2new", "a photo of a {}."),
    ("DTD", "few_shot", "{} texture."), ("DTD", "base2new", "a photo of a {}."),
    ("Food101", "base2new", "a photo of {}, a type of food."), ("Food101", "cross_dataset", "a photo of {}, a type of food."),
    ("EuroSAT", "few_shot", "a centered satellite photo of {}."), ("UCF101", "few_shot", "a photo of a person doing {}."),
    ("BUSI", "cross_dataset", "a photo of a {}."),  # falls back to few-shot
])
def test_templates(name, protocol, template):
    assert dataset_info(name).template(protocol) == template


def test_hflip_off_where_laterality_matters():
    assert {n for n in list_datasets() if not dataset_info(n).hflip} == {"COVID_19", "KneeXray", "PneumoniaMNIST"}


def test_prompts_replace_underscores():
    assert dataset_info("UCF101").prompts("few_shot", ["Apply_Eye_Makeup"]) == ["a photo of a person doing Apply Eye Makeup."]


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(DataError, match="unknown dataset 'nope'.*custom"):
        dataset_info("nope")


@pytest.mark.parametrize("name,layout_index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_synthetic_root_reads_back(tmp_path, name, layout_index):
    info = dataset_info(name)
    kind = make_root(tmp_path, info, layout_index)
    splits = load_dataset(name.lower(), tmp_path)  # registry names are case-insensitive
    assert splits.report.complete, splits.report.format()
    counts = splits.counts()
    if kind == "split_json":
        n = len(class_names(info))
        assert counts == {s: n for s in SPLITS}
        assert splits.classnames == class_names(info)
    elif kind == "fgvc_txt":
        assert splits.classnames == ["707-320", "Boeing 737-200", "F/A-18"] and counts == {s: 3 for s in SPLITS}
    elif kind == "imagenet_folders":
        assert splits.classnames == list(WNIDS.values())
        assert counts == {"train": 4, "val": 4, "test": 4} and splits.val == splits.test
    elif kind == "imagenet_numbered":
        assert counts == {"train": 0, "val": 0, "test": 4}
        assert [s.label for s in splits.test] == [0, 1, 2, 3]
    elif kind == "imagenet_variant":  # labels over the classes present, in folder order
        assert splits.classnames == list(WNIDS.values())[1:] and [s.label for s in splits.test] == [0, 1, 2]
    elif kind == "medmnist_npz":
        C = len(info.classnames)
        assert counts == {"train": C, "val": C + 1, "test": C + 2}
    for s in SPLITS:
        for sample in splits.split(s):
            assert splits.classnames[sample.label] == sample.classname
    # and the images decode
    from medclipsvd.data import read_image

    img = read_image(splits.test[0].path, splits.test[0].index)
    assert img.shape[2] == 3 and img.dtype.name == "float32"


def test_root_may_be_the_dataset_folder_itself(tmp_path):
    info = dataset_info("BUSI")
    make_root(tmp_path, info)
    assert load_dataset("BUSI", tmp_path / "BUSI").counts() == {"train": 3, "val": 3, "test": 3}


def test_missing_root_says_where_to_get_the_data(tmp_path):
    with pytest.raises(DataError, match=r"no data found under .*split_BUSI\.json.*huggingface"):
        load_dataset("BUSI", tmp_path)


def test_relative_root_gives_absolute_sample_paths(tmp_path, monkeypatch):
    make_root(tmp_path, dataset_info("BUSI"))
    monkeypatch.chdir(tmp_path)
    s = load_dataset("BUSI", ".")
    assert all(x.path.startswith("/") for x in s.train + s.val + s.test)
