"""Robustness rows for issue 16 item 8, its data and model-output part: inputs that used to give a result
that looked fine and was not. Each is now one clear line naming the file (or option) and the fix, exit 2, or
exit 0 with a warning where an option documents it (--allow-missing):

* an adapter whose σ were edited to 1e30 (digest re-sealed, so only the value check can catch it) printed a
  label with NaN probabilities in `predict` and `evaluate`;
* a split file with one class scored 100 %;
* a class with no training image was scored silently;
* a CSV with two `label` columns used the second;
* labels differing by a zero-width character or a Cyrillic look-alike letter became extra classes;
* a DICOM with RescaleSlope 0 was read as a blank image and classified;
* an empty test split failed after training, while `data check` called it complete.

The rules every row is held to are in harness.py; the unit tests at the end check the pieces the rows
cannot reach through the command line (the non-finite score check behind the σ bound, `data check`'s
report and exit status)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

ISSUE, ITEM = 16, 8


def _train(c: Corpus, data, *extra: str) -> list[str]:
    return ["train", "--pipeline", "custom", "--data-root", str(data), "--output", str(c.path("out")), *c.FAST,
            *extra]


def _busi_train(c: Corpus, data, *extra: str) -> list[str]:
    return ["train", "--pipeline", "breast_ultrasound", "--data-root", str(data), "--output", str(c.path("out")),
            *c.FAST, *extra]


def _busi_split(c: Corpus, data: Path) -> Path:
    from medclipsvd.data.registry import dataset_info

    layout = dataset_info("BUSI").layouts[0]
    return data / layout.dir / layout.split_file


def _edit_split(path: Path, edit) -> None:
    split = json.loads(path.read_text())
    edit(split)
    path.write_text(json.dumps(split))


# ----------------------------------------------------------------------------- σ = 1e30 in a sealed adapter
_TRAINED: list[Path] = []  # one tiny training run, shared by the adapter rows (the first row's tmp folder)


def _trained_run(c: Corpus) -> Path:
    """A normal tiny `train` output (adapter/ + results.json), copied into this row's folder."""
    if not _TRAINED:
        data = c.class_folders("trained-data")
        out = c.path("trained")
        o = run_cli(["train", "--pipeline", "custom", "--data-root", str(data), "--output", str(out), *c.FAST])
        assert o.code == 0, o.text[-2000:]
        _TRAINED.append(out)
    elif not _TRAINED[0].exists():
        pytest.skip("the shared training run's folder is gone")
    run = c.path("run")
    if not run.exists():
        shutil.copytree(_TRAINED[0], run, ignore=shutil.ignore_patterns("checkpoint", "plots"))
    return run


def _sigma_1e30(c: Corpus) -> Path:
    """The run's adapter with one σ set to 1e30, written with safetensors directly and its sha256 re-sealed
    in adapter_config.json: the digest and the finiteness check both pass, only the range check can refuse."""
    from safetensors.torch import load_file, save_file

    adapter = _trained_run(c) / "adapter"
    weights = adapter / "adapter.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name][0] = 1e30
    save_file(tensors, str(weights), metadata={"format": "medclipsvd.sigma-adapter"})
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config.get("weights_sha256"), "the adapter carries a digest: it is re-sealed below"
    config["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return adapter


def sigma_huge_predict(c: Corpus) -> Scenario:
    adapter = _sigma_1e30(c)
    image = c.image(c.path("scan.png"), seed=3)
    return Scenario(["predict", "--adapter", str(adapter), str(image), "--device", "cpu"],
                    ["adapter.safetensors", "σ = 1e+30", "at most 1000 times", "restore the adapter folder"],
                    keep=[adapter])


def sigma_huge_evaluate(c: Corpus) -> Scenario:
    adapter = _sigma_1e30(c)
    return Scenario(["evaluate", "--adapter", str(adapter), "--device", "cpu", "--no-mlflow",
                     "--output", str(c.path("evaluation"))],
                    ["adapter.safetensors", "σ = 1e+30", "retrain with a lower --lr"], keep=[adapter])


# ------------------------------------------------------------------------------------- one class, no train
def split_file_one_class(c: Corpus) -> Scenario:
    """A custom split file whose meta names two classes but whose entries are all 'benign'."""
    data = c.class_folders()
    split = c.split_json({"train": [["benign/benign0.png", 0, "benign"], ["benign/benign1.png", 0, "benign"]],
                          "val": [["benign/benign2.png", 0, "benign"]],
                          "test": [["benign/benign3.png", 0, "benign"]],
                          "meta": {"classnames": ["benign", "malignant"]}})
    return Scenario(_train(c, data, "--split-file", str(split)),
                    ["split.json", "only the class 'benign'", "at least two classes"], keep=[data, split])


def busi_split_one_class(c: Corpus) -> Scenario:
    data = c.busi()
    split = _busi_split(c, data)
    _edit_split(split, lambda s: [s.__setitem__(k, [e for e in s[k] if e[1] == 0]) for k in ("train", "val", "test")])
    return Scenario(_busi_train(c, data), ["split_BUSI.json", "only the class 'benign tumor'",
                                           "at least two classes"], keep=[data])


def csv_class_only_in_test(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    csv.write_text(csv.read_text().replace("malignant,train", "malignant,test"))
    return Scenario(_train(c, csv), ["export.csv", "'malignant'", "no image in the few-shot train set",
                                     "add train images"], keep=[csv.parent])


def busi_class_without_train(c: Corpus) -> Scenario:
    data = c.busi()
    _edit_split(_busi_split(c, data), lambda s: s.__setitem__("train", [e for e in s["train"] if e[1] != 2]))
    return Scenario(_busi_train(c, data), ["split_BUSI.json", "'normal scan'", "no image in the few-shot train set",
                                           "--allow-missing"], keep=[data])


def busi_class_without_train_allowed(c: Corpus) -> Scenario:
    data = c.busi()
    _edit_split(_busi_split(c, data), lambda s: s.__setitem__("train", [e for e in s["train"] if e[1] != 2]))
    return Scenario(_busi_train(c, data, "--allow-missing"),
                    ["'normal scan'", "no image in the few-shot train set", "--allow-missing"], exit_code=0,
                    keep=[data])


# ------------------------------------------------------------------------------------------ CSV columns
def csv_two_label_columns(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",label"] + [l + ",benign" for l in lines[1:]]) + "\n")
    return Scenario(_train(c, csv), ["export.csv", "column 'label' appears 2 times", "columns 2, 4",
                                     "keep one 'label' column"], keep=[csv.parent])


# --------------------------------------------------------------------------------- look-alike class names
def folder_zero_width_class(c: Corpus) -> Scenario:
    data = c.class_folders(classes=("benign", "benign\u200b", "malignant"))
    return Scenario(["data", "check", "-d", "custom", "-r", str(data)],
                    [str(data), "'benign\\u200b'", "U+200B ZERO WIDTH SPACE", "rename one"], keep=[data])


def csv_cyrillic_label(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    csv.write_text(csv.read_text().replace("img/benign1.png,benign", "img/benign1.png,b\u0435nign"))
    return Scenario(_train(c, csv), ["export.csv", "'benign' and 'b\u0435nign'", "U+0435 CYRILLIC SMALL LETTER IE",
                                     "rename one"], keep=[csv.parent])


def split_file_greek_label(c: Corpus) -> Scenario:
    data = c.class_folders(classes=("benign", "malignant", "normal"))
    split = c.split_json({"train": [["benign/benign0.png", 0, "benign"], ["malignant/malignant0.png", 1, "malignant"],
                                    ["normal/normal0.png", 2, "n\u03bfrmal"]],
                          "val": [], "test": [["normal/normal1.png", 2, "n\u03bfrmal"]],
                          "meta": {"classnames": ["benign", "malignant", "normal", "n\u03bfrmal"]}})
    return Scenario(_train(c, data, "--split-file", str(split)),
                    ["split.json", "'normal' and 'n\u03bfrmal'", "U+03BF GREEK SMALL LETTER OMICRON"],
                    keep=[data, split])


# ------------------------------------------------------------------------------------------------ DICOM
def _slope_zero(c: Corpus, path: Path) -> Path:
    import pydicom

    c.dicom(path)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 0, 0
    ds.save_as(path)
    return path


def dicom_slope_zero_folder(c: Corpus) -> Scenario:
    data = c.class_folders()
    _slope_zero(c, data / "malignant" / "slope0.dcm")
    return Scenario(_train(c, data), ["slope0.dcm", "RescaleSlope (0028,1053) is 0", "blank image", "fix the tag"],
                    keep=[data])


def dicom_slope_zero_csv(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/slope0.dcm,malignant,train"])
    _slope_zero(c, csv.parent / "img" / "slope0.dcm")
    return Scenario(_train(c, csv), ["img/slope0.dcm", "RescaleSlope (0028,1053) is 0", "fix the tag"],
                    keep=[csv.parent])


# ------------------------------------------------------------------------------------------ empty test
def custom_split_empty_test(c: Corpus) -> Scenario:
    data = c.class_folders()
    split = c.split_json({"train": [["benign/benign0.png", 0, "benign"], ["malignant/malignant0.png", 1, "malignant"]],
                          "val": [["benign/benign1.png", 0, "benign"]], "test": []})
    return Scenario(_train(c, data, "--split-file", str(split)),
                    ["split.json", "the test split is empty", "add test entries"], keep=[data, split])


def busi_empty_test(c: Corpus) -> Scenario:
    data = c.busi()
    _edit_split(_busi_split(c, data), lambda s: s.__setitem__("test", []))
    return Scenario(_busi_train(c, data), ["split_BUSI.json", "the test split is empty",
                                           "restore the dataset's test images"], keep=[data])


ROWS = [
    Row("adapter-sigma-1e30-predict", ITEM, "model output", "sealed adapter with σ = 1e30, `predict`",
        sigma_huge_predict, slow=True, issue=ISSUE),
    Row("adapter-sigma-1e30-evaluate", ITEM, "model output", "sealed adapter with σ = 1e30, `evaluate`",
        sigma_huge_evaluate, slow=True, issue=ISSUE),
    Row("split-file-one-class", ITEM, "data: classes", "custom split file, meta lists 2 classes, entries 1",
        split_file_one_class, issue=ISSUE),
    Row("busi-split-one-class", ITEM, "data: classes", "BUSI split file holding one class", busi_split_one_class,
        issue=ISSUE),
    Row("csv-class-only-in-test", ITEM, "data: classes", "CSV: a class with val/test rows but no train row",
        csv_class_only_in_test, issue=ISSUE),
    Row("busi-class-without-train", ITEM, "data: classes", "BUSI split with no train entry for one class",
        busi_class_without_train, issue=ISSUE),
    Row("busi-class-without-train-allowed", ITEM, "data: classes",
        "same, `--allow-missing`: trained without it, warned", busi_class_without_train_allowed, slow=True,
        issue=ISSUE),
    Row("csv-two-label-columns", ITEM, "data: CSV", "CSV header `path,label,split,label`", csv_two_label_columns,
        issue=ISSUE),
    Row("folder-zero-width-class", ITEM, "data: class names", "class folders `benign` and `benign\\u200b`",
        folder_zero_width_class, issue=ISSUE),
    Row("csv-cyrillic-label", ITEM, "data: class names", "CSV labels `benign` and `bеnign` (Cyrillic е)",
        csv_cyrillic_label, issue=ISSUE),
    Row("split-file-greek-label", ITEM, "data: class names", "split file classes `normal` and `nοrmal` (Greek ο)",
        split_file_greek_label, issue=ISSUE),
    Row("dicom-slope-zero-folder", ITEM, "DICOM", "DICOM with RescaleSlope 0 in a class folder",
        dicom_slope_zero_folder, issue=ISSUE),
    Row("dicom-slope-zero-csv", ITEM, "DICOM", "DICOM with RescaleSlope 0 listed in a CSV", dicom_slope_zero_csv,
        issue=ISSUE),
    Row("custom-split-empty-test", ITEM, "data: splits", "custom split file with `\"test\": []`",
        custom_split_empty_test, issue=ISSUE),
    Row("busi-empty-test", ITEM, "data: splits", "BUSI split file with an empty test list", busi_empty_test,
        issue=ISSUE),
]


@pytest.mark.parametrize("row", [pytest.param(r, marks=[pytest.mark.slow] if r.slow else [], id=r.id) for r in ROWS])
def test_row(row: Row, tmp_path):
    run_row(row, tmp_path)


# ------------------------------------------------------------------------------ what the rows cannot reach
def test_data_check_reports_an_empty_test_split_and_fails(tmp_path):
    """`data check` prints the per-class report, names the empty test split as a problem and exits 1 (it
    used to say 'complete' and exit 0)."""
    c = Corpus(tmp_path)
    data = c.class_folders()
    split = c.split_json({"train": [["benign/benign0.png", 0, "benign"], ["malignant/malignant0.png", 1, "malignant"]],
                          "val": [], "test": []})
    out = run_cli(["data", "check", "-d", "custom", "-r", str(data), "--split-file", str(split),
                   "--json", str(c.path("report.json"))])
    assert out.code == 1, out.text
    assert "the test split is empty" in out.text and "result: FAILED" in out.text
    assert "result: complete" not in out.text
    report = json.loads(c.path("report.json").read_text())
    assert report["complete"] is False and any("test split is empty" in g for g in report["gaps"])


def test_data_check_reports_a_class_without_train_entries(tmp_path):
    c = Corpus(tmp_path)
    csv = c.csv_dataset()
    csv.write_text(csv.read_text().replace("malignant,train", "malignant,test"))
    out = run_cli(["data", "check", "-d", "custom", "-r", str(csv)])
    assert out.code == 1, out.text
    assert "problem:" in out.text and "'malignant' have no train entries" in out.text
    assert "result: FAILED" in out.text


def test_an_empty_test_split_still_loads_for_train_only_use(tmp_path):
    """The API keeps loading a train-only dataset (fractions 1,0,0): the gap is in the report, and runs
    refuse it (the rows above)."""
    from medclipsvd.data import load_dataset

    c = Corpus(tmp_path)
    data = c.class_folders()
    splits = load_dataset("custom", data, fractions=(1, 0, 0))
    assert len(splits.train) == 12 and not splits.test
    assert not splits.report.complete and splits.report.ok
    assert any("test split is empty" in g for g in splits.report.gaps)


class _NaNBackbone:
    """Stands in for a backbone whose weights overflow: image features come out NaN for image ``bad``."""

    def __init__(self, bad: int | None):
        import torch

        self.bad = bad
        self.logit_scale = torch.tensor(100.0)
        self.logit_bias = None

    def encode_image(self, x):
        import torch

        f = torch.ones(len(x), 4)
        if self.bad is not None:
            f[self.bad] = float("nan")
        return f


def test_predictor_refuses_nan_probabilities_naming_the_input(tmp_path):
    """The second line of defence behind the σ bound: whatever makes the model's scores non-finite, no label
    is printed from them; the error names the first input affected."""
    import torch

    from medclipsvd.errors import ModelOutputError
    from medclipsvd.serving.predictor import Predictor

    c = Corpus(tmp_path)
    images = [c.image(c.path(f"img{i}.png"), seed=i) for i in range(3)]
    p = Predictor.__new__(Predictor)  # the scoring path only: no backbone is built
    p.backbone, p.classnames, p.device = _NaNBackbone(bad=1), ["a", "b"], torch.device("cpu")
    p.text = torch.ones(2, 4)
    from medclipsvd.data.volumes.policy import InputPolicy

    from medclipsvd.serving.inputs import PathPolicy

    p.view, p.transform = InputPolicy(), lambda arr: torch.zeros(3, 8, 8)
    p.paths = PathPolicy.local()  # local files, as `medclipsvd predict` reads them
    from medclipsvd.device import precision_plan

    p.precision = precision_plan("fp32", p.device)
    with pytest.raises(ModelOutputError, match=r"non-finite scores \(NaN/inf\) for 1 of 3 image\(s\) \(first: "
                                               + str(images[1]).replace(".", r"\.")):
        p.predict_proba([str(i) for i in images])
    p.backbone = _NaNBackbone(bad=None)  # finite scores: probabilities as before
    probs = p.predict_proba([str(i) for i in images])
    assert np.allclose(probs, 0.5) and np.isfinite(probs).all()


def test_evaluation_refuses_non_finite_scores():
    import torch

    from medclipsvd.engine.evaluator import check_finite_scores
    from medclipsvd.errors import ModelOutputError

    check_finite_scores(torch.zeros(4, 3))  # finite: nothing happens
    logits = torch.zeros(4, 3)
    logits[2, 1] = float("inf")
    logits[3, 0] = float("nan")
    with pytest.raises(ModelOutputError, match=r"for 2 of 4 image\(s\) \(first: input 3\)"):
        check_finite_scores(logits)
