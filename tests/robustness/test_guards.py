"""Robustness rows for issue 10 items 2 (root confinement), 7 (decompression bombs), 8 (--allow-missing),
10 (option/config validation, data warnings), 11 (DICOM) and the CLI's last line of defence.
The rules every row is held to are in harness.py."""
from __future__ import annotations

import os
import shutil

import pytest
from harness import Corpus, Row, Scenario, run_row

TRAIN = ["train", "--pipeline", "custom"]


def _train(c: Corpus, data, *extra: str) -> list[str]:
    return [*TRAIN, "--data-root", str(data), "--output", str(c.path("out")), *c.FAST, *extra]


# ------------------------------------------------------------------------------ item 2: root confinement
def split_traversal(c: Corpus) -> Scenario:
    rel = c.rel_to_secret(c.busi_base)  # ../../../outside/secret.png
    data = c.busi({"train": [[rel, 0, "benign tumor"]]})
    return Scenario(["data", "check", "-d", "BUSI", "-r", str(data)], [rel, "outside the data root",
                    "relative to the data root"], forbidden=[c.outside], keep=[data])


def split_absolute(c: Corpus) -> Scenario:
    data = c.busi({"test": [[str(c.secret), 1, "malignant tumor"]]})
    return Scenario(["data", "check", "-d", "BUSI", "-r", str(data)], [str(c.secret), "outside the data root"],
                    forbidden=[c.outside], keep=[data])


def split_etc_passwd(c: Corpus) -> Scenario:
    data = c.busi({"train": [["../../../../../../../../../../../../etc/passwd", 0, "benign tumor"]]})
    return Scenario(["data", "check", "-d", "BUSI", "-r", str(data)], ["etc/passwd", "outside the data root"],
                    forbidden=[c.outside, "/etc/passwd"], keep=[data])


def csv_traversal(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["../outside/secret.png,benign,train"])
    return Scenario(_train(c, csv), ["row 10", "../outside/secret.png", "outside the data root"],
                    forbidden=[c.outside], keep=[csv.parent])


def csv_absolute(c: Corpus) -> Scenario:
    csv = c.csv_dataset([f"{c.secret},malignant,test"])
    return Scenario(_train(c, csv), [str(c.secret), "outside the data root"], forbidden=[c.outside],
                    keep=[csv.parent])


def folder_symlink(c: Corpus) -> Scenario:
    data = c.class_folders()
    os.symlink(c.secret, data / "benign" / "link.png")
    return Scenario(["data", "check", "-d", "custom", "-r", str(data)], ["link.png", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[data])


def folder_symlinked_class(c: Corpus) -> Scenario:
    data = c.class_folders()
    for i in range(3):
        c.image(c.outside / "normal" / f"n{i}.png", seed=50 + i)
    os.symlink(c.outside / "normal", data / "normal")
    return Scenario(_train(c, data), ["normal", "--follow-symlinks"], forbidden=[c.outside], keep=[data])


def custom_split_traversal(c: Corpus) -> Scenario:
    data = c.class_folders()
    split = c.split_json({"train": [["benign/benign0.png", 0, "benign"], ["../outside/secret.png", 1, "malignant"]],
                          "val": [], "test": [["malignant/malignant0.png", 1, "malignant"]]})
    return Scenario(["data", "check", "-d", "custom", "-r", str(data), "--split-file", str(split)],
                    ["../outside/secret.png", "outside the data root"], forbidden=[c.outside], keep=[data])


# --------------------------------------------------------------------------- item 7: decompression bombs
def bomb_over_limit(c: Corpus) -> Scenario:
    data = c.class_folders()
    c.bomb_png(data / "benign" / "bomb.png", side=14000)  # 190 KB on disk, 196 megapixels
    return Scenario(_train(c, data), ["bomb.png", "196 megapixels", "MEDCLIPSVD_MAX_IMAGE_PIXELS",
                                      "--allow-missing"], keep=[data])


def bomb_configured_limit(c: Corpus) -> Scenario:
    data = c.class_folders()
    c.bomb_png(data / "malignant" / "big.png", side=3000)
    return Scenario(_train(c, data), ["big.png", "3000x3000", "above the limit of 5 megapixels"],
                    env={"MEDCLIPSVD_MAX_IMAGE_PIXELS": "5000000"}, keep=[data])


def pixel_limit_not_a_number(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(_train(c, data), ["MEDCLIPSVD_MAX_IMAGE_PIXELS='lots'", "unset it"],
                    env={"MEDCLIPSVD_MAX_IMAGE_PIXELS": "lots"}, keep=[data])


# ----------------------------------------------------------------------- item 8: undecodable, --allow-missing
def truncated_without_allow_missing(c: Corpus) -> Scenario:
    data = c.class_folders()
    c.truncated_png(data / "benign" / "trunc.png")
    return Scenario(_train(c, data, "--shots", "8"), ["trunc.png", "cannot be decoded", "--allow-missing"],
                    keep=[data])


def truncated_with_allow_missing(c: Corpus) -> Scenario:
    data = c.class_folders()
    c.truncated_png(data / "benign" / "trunc.png")
    return Scenario(_train(c, data, "--shots", "8", "--allow-missing"), ["dropped 1 undecodable", "trunc.png"],
                    exit_code=0, keep=[data])


def benchmark_truncated_with_allow_missing(c: Corpus) -> Scenario:
    data = c.busi()
    c.truncated_png(c.busi_base / "benign_tumor" / "test0.png")  # header intact: passes the data load
    return Scenario(["benchmark", "--suite", "BUSI", "--shots", "1", "--seeds", "1", "--method", "zero_shot",
                     "--backbone", "tiny-biomedclip", "--data-root", str(data), "--output", str(c.path("bench")),
                     "--no-mlflow", "--device", "cpu", "--allow-missing"],
                    ["dropped 1 undecodable", "test0.png"], exit_code=0)


# ------------------------------------------------------------------------- item 10: options and configs
def _opt(option: str, value: str, *mentions: str):
    def build(c: Corpus) -> Scenario:
        data = c.class_folders()
        argv = [a for a in _train(c, data) if a]
        if option in argv:  # replace FAST's value
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        return Scenario(argv, [option, *mentions], keep=[data])

    build.__name__ = f"opt{option}"
    return build


def _pipeline(body: dict, *mentions: str):
    def build(c: Corpus) -> Scenario:
        data = c.class_folders()
        p = c.pipeline(body)
        return Scenario(["train", "--pipeline", str(p), "--data-root", str(data), "--output", str(c.path("out")),
                         "--no-mlflow", "--device", "cpu"], [p.name, *mentions], keep=[data, p])

    return build


def dup_rows(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/benign0.png,benign,train"])
    return Scenario(["data", "check", "-d", "custom", "-r", str(csv)], ["1 duplicated row", "img/benign0.png"],
                    exit_code=0, keep=[csv.parent])


def path_leak(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/benign0.png,benign,test"])
    return Scenario(_train(c, csv), ["img/benign0.png", "also in train", "one split"], keep=[csv.parent])


def content_leak(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/copy_of_benign0.png,benign,test"])
    shutil.copy(csv.parent / "img" / "benign0.png", csv.parent / "img" / "copy_of_benign0.png")
    return Scenario(["data", "check", "-d", "custom", "-r", str(csv)], ["same content", "copy_of_benign0.png"],
                    exit_code=0, keep=[csv.parent])


def near_duplicate_classes(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/benign0.png,Benign,val"], name="data/export.csv")
    c.image(csv.parent / "img" / "b2.png", seed=7)
    csv.write_text(csv.read_text() + "img/b2.png,Benign ,train\nimg/benign1.png,BENIGN,test\n")
    return Scenario(_train(c, csv), ["differ only in case or spacing", "rename"], keep=[csv.parent])


def single_class(c: Corpus) -> Scenario:
    data = c.class_folders(classes=("benign",))
    return Scenario(_train(c, data), ["only the class 'benign'", "at least two classes"], keep=[data])


def one_file_two_labels(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/benign0.png,malignant,train"])
    return Scenario(_train(c, csv), ["img/benign0.png", "two classes", "right label"], keep=[csv.parent])


# -------------------------------------------------------------------------------------- item 11: DICOM
def dicom_truncated(c: Corpus) -> Scenario:
    data = c.class_folders()
    c.dicom(data / "malignant" / "cut.dcm", cut=400)
    return Scenario(_train(c, data), ["cut.dcm", "DICOM file is truncated", "--allow-missing"], keep=[data])


# ---------------------------------------------------------------------------------------- CLI top level
def bad_option_type(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario([*TRAIN, "--data-root", str(data), "--output", "o", "--shots", "many"],
                    ["--shots", "valid integer", "medclipsvd train --help"])


def missing_option(c: Corpus) -> Scenario:
    return Scenario(["train", "--output", "o"], ["Missing option", "--pipeline", "--help"])


def output_is_a_file(c: Corpus) -> Scenario:
    data = c.class_folders()
    out = c.path("results.txt")
    out.write_text("earlier results\n")
    argv = _train(c, data)
    argv[argv.index("--output") + 1] = str(out)
    return Scenario(argv, [str(out), "check the path"], exit_code=2, keep=[data, out])


def split_force_keeps_old(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/benign0.png,benign,test"])  # a leak: the new split cannot be written
    old = c.split_json({"train": [], "val": [], "test": []}, name="data/split.json")
    return Scenario(["data", "split", "-r", str(csv), "-o", str(old), "--force"], ["also in train"],
                    keep=[old, csv.parent])


ROWS = [
    Row("split-traversal", 2, "root confinement", "benchmark split file entry `../../../outside/secret.png`", split_traversal),
    Row("split-absolute", 2, "root confinement", "split file entry with an absolute path outside the root", split_absolute),
    Row("split-etc-passwd", 2, "root confinement", "split file entry `../../../../etc/passwd`", split_etc_passwd),
    Row("csv-traversal", 2, "root confinement", "hospital CSV row `../outside/secret.png`", csv_traversal),
    Row("csv-absolute", 2, "root confinement", "hospital CSV row with an absolute path outside its folder", csv_absolute),
    Row("folder-symlink", 2, "root confinement", "class folder holding a symlink to a file outside the root", folder_symlink),
    Row("folder-symlinked-class", 2, "root confinement", "class folder that is a symlink to a folder outside", folder_symlinked_class),
    Row("custom-split-traversal", 2, "root confinement", "custom --split-file entry `../outside/secret.png`", custom_split_traversal),
    Row("bomb-over-limit", 7, "decompression bomb", "190 KB PNG of 14000x14000 pixels in a class folder", bomb_over_limit),
    Row("bomb-configured-limit", 7, "decompression bomb", "3000x3000 PNG with MEDCLIPSVD_MAX_IMAGE_PIXELS=5000000", bomb_configured_limit),
    Row("pixel-limit-nan", 7, "decompression bomb", "MEDCLIPSVD_MAX_IMAGE_PIXELS=lots", pixel_limit_not_a_number),
    Row("truncated-no-allow-missing", 8, "undecodable image", "truncated PNG (header intact) in the training data", truncated_without_allow_missing),
    Row("truncated-allow-missing", 8, "undecodable image", "same, `train --allow-missing`: dropped and counted", truncated_with_allow_missing, slow=True),
    Row("benchmark-truncated-allow-missing", 8, "undecodable image", "truncated test image, `benchmark --allow-missing`", benchmark_truncated_with_allow_missing, slow=True),
    Row("shots-0", 10, "option validation", "`--shots 0`", _opt("--shots", "0", "greater than or equal to 1")),
    Row("lr-0", 10, "option validation", "`--lr 0`", _opt("--lr", "0", "greater than 0")),
    Row("lr-nan", 10, "option validation", "`--lr nan`", _opt("--lr", "nan", "finite")),
    Row("checkpoint-every-negative", 10, "option validation", "`--checkpoint-every -1`", _opt("--checkpoint-every", "-1", "greater than or equal to 0")),
    Row("num-workers-negative", 10, "option validation", "`--num-workers -1`", _opt("--num-workers", "-1", "greater than or equal to 0")),
    Row("max-steps-0", 10, "option validation", "`--max-steps 0`", _opt("--max-steps", "0", "greater than or equal to 1")),
    Row("seed-negative", 10, "option validation", "`--seed -3`", _opt("--seed", "-3", "greater than or equal to 0")),
    Row("template-no-slot", 10, "config validation", "pipeline template without `{}`", _pipeline({"template": "a photo"}, "template", "exactly one '{}'")),
    Row("template-two-slots", 10, "config validation", "pipeline template `a {} of {}`", _pipeline({"template": "a {} of {}"}, "exactly one '{}'")),
    Row("template-named-field", 10, "config validation", "pipeline template `a {organ} scan of {}`", _pipeline({"template": "a {organ} scan of {}"}, "no other fields")),
    Row("template-lone-brace", 10, "config validation", "pipeline template `a {} photo {`", _pipeline({"template": "a {} photo {"}, "not a valid format string")),
    Row("hparams-template", 10, "config validation", "inline hparams template without `{}`", _pipeline({"hparams": {"template": "an image"}}, "hparams.template")),
    Row("crop-scale-reversed", 10, "config validation", "augmentation crop scale `[1.5, 0.2]`", _pipeline({"augmentation": {"random_resized_crop_scale": [1.5, 0.2]}}, "random_resized_crop_scale", "0 < min <= max <= 1")),
    Row("hparams-shots-0", 10, "config validation", "inline hparams `shots: 0`", _pipeline({"hparams": {"shots": 0}}, "hparams.shots")),
    Row("duplicate-rows", 10, "data warning", "CSV with a duplicated row (warned, counted once)", dup_rows),
    Row("path-leak", 10, "data warning", "CSV: the same image in train and test", path_leak),
    Row("content-leak", 10, "data warning", "CSV: a test image with the same bytes as a train image (warned)", content_leak),
    Row("near-duplicate-classes", 10, "data warning", "labels `benign`, `Benign `, `BENIGN`", near_duplicate_classes),
    Row("single-class", 10, "data warning", "a folder dataset with one class", single_class),
    Row("one-file-two-labels", 10, "data warning", "CSV: one image listed under two classes", one_file_two_labels),
    Row("dicom-truncated", 11, "DICOM", "DICOM cut before its pixel data (with patient tags)", dicom_truncated),
    Row("bad-option-type", 1, "CLI usage", "`--shots many`", bad_option_type),
    Row("missing-option", 1, "CLI usage", "`train` without `--pipeline`", missing_option),
    Row("output-is-a-file", 1, "file system", "`--output` naming an existing file", output_is_a_file),
    Row("split-force-keeps-old", 1, "nothing lost", "`data split --force` whose new split fails", split_force_keeps_old),
]


@pytest.mark.parametrize("row", [pytest.param(r, marks=[pytest.mark.slow] if r.slow else [], id=r.id) for r in ROWS])
def test_row(row: Row, tmp_path):
    run_row(row, tmp_path)
