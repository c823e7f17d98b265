"""Robustness rows for what the issue-16 bad-input sweep (tools/sweep) found after the eight items were in:
inputs no item named yet, each now one clear line naming the file or option and the fix (exit 2), before
anything is built from them:

* results.json / model_config.json: a prompt template reaching attributes (``{0.__class__}``), one class,
  two class names a reader cannot tell apart; results.json ``run.backbone_kwargs`` naming a callable;
  method.json naming ``os.system`` (was an unexpected KeyError);
* FIFOs and devices given as a split file, a pipeline YAML or `data check --json` (all hung);
* split-file labels ``true`` (read as class 1) and ``10**30`` (a class list of 10**30 names);
* `data split --fractions nan,0,0` and ``1,0,0`` (accepted; the second writes a split with no test images);
* `--shots 1e12` (a list of 10**12 samples), a seed beyond 32 bits, `--device meta` (unexpected errors);
* a CSV with two ``path`` columns, a CSV row with more fields than the header (unexpected AttributeError);
* a DICOM whose RescaleSlope is 1e30 (overflowing pixel values);
* a YAML holding a NUL byte (unexpected ReaderError);
* a tracking URI of a closed database port (about 100 s of MLflow retries, then an unexpected error).

The rules every row is held to are in harness.py; the tests after ROWS check what a row cannot reach
through the command line, or what it must not take (the time a closed database costs)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

ISSUE, ITEM = 16, 8
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")


def _train(c: Corpus, data, *extra: str) -> list[str]:
    return ["train", "--pipeline", "custom", "--data-root", str(data), "--output", str(c.path("out")), *c.FAST,
            *extra]


def _with(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with ``option`` set to ``value`` (replacing the value FAST gives it)."""
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
        return argv
    return [*argv, option, value]


# ------------------------------------------------------------------------------ a run folder, hand-edited
def _run_folder(c: Corpus, results: dict | None = None, method_json: dict | None = None) -> Path:
    """A train output as the serving readers see it: adapter/ (only method.json when given: the rows fail
    before any weight is read) and the results.json beside it, with ``results`` merged in."""
    run = c.path("run")
    (run / "adapter").mkdir(parents=True)
    doc = {"template": "a photo of a {}.", "classnames": ["benign", "malignant"],
           "run": {"dataset": "custom", "backbone": "tiny-biomedclip", "data_root": str(c.path("data")),
                   "template": "a photo of a {}.", "preprocess": [], "backbone_kwargs": {}}}
    for key, value in (results or {}).items():
        if key == "run":
            doc["run"].update(value)
        else:
            doc[key] = value
    (run / "results.json").write_text(json.dumps(doc))
    if method_json is not None:
        (run / "adapter" / "method.json").write_text(json.dumps(method_json))
    return run


def _predict(c: Corpus, run: Path) -> list[str]:
    image = c.image(c.path("probe.png"), seed=3)
    return ["predict", "--adapter", str(run / "adapter"), str(image), "--device", "cpu"]


def results_template_attribute(c: Corpus) -> Scenario:
    run = _run_folder(c, {"template": "{0.__class__.__mro__}", "run": {"template": "{0.__class__.__mro__}"}})
    return Scenario(_predict(c, run), [str(run / "results.json"), "template", "exactly one '{}'",
                                       "restore the file"], keep=[run])


def results_one_class(c: Corpus) -> Scenario:
    run = _run_folder(c, {"classnames": ["benign"]})
    return Scenario(_predict(c, run), [str(run / "results.json"), "classnames", "at least two", "restore the file"],
                    keep=[run])


def results_look_alike_classes(c: Corpus) -> Scenario:
    run = _run_folder(c, {"classnames": ["benign", "Benign\u200b"]})
    return Scenario(_predict(c, run), [str(run / "results.json"), "cannot tell apart", "restore the file"],
                    keep=[run])


def results_backbone_kwargs_callable(c: Corpus) -> Scenario:
    c.class_folders()
    run = _run_folder(c, {"run": {"backbone_kwargs": {"model_factory": "os.system"}}})
    return Scenario(["evaluate", "--adapter", str(run / "adapter"), "--no-mlflow", "--device", "cpu"],
                    [str(run / "results.json"), "backbone_kwargs", "weights", "restore the file"], keep=[run])


def method_json_callable(c: Corpus) -> Scenario:
    run = _run_folder(c, method_json={"method": "os.system", "fingerprint": "f" * 32})
    return Scenario(_predict(c, run), [str(run / "adapter" / "method.json"), "unknown method 'os.system'",
                                       "restore it"], keep=[run])


# -------------------------------------------------------------------------------- FIFOs and devices
def _fifo(c: Corpus, name: str) -> Path:
    path = c.path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def split_file_fifo(c: Corpus) -> Scenario:
    data = c.class_folders()
    fifo = _fifo(c, "split.json")
    return Scenario(["data", "check", "-d", "custom", "-r", str(data), "--split-file", str(fifo)],
                    [str(fifo), "FIFO", "regular file"], keep=[data])


def pipeline_yaml_fifo(c: Corpus) -> Scenario:
    data = c.class_folders()
    fifo = _fifo(c, "pipeline.yaml")
    return Scenario(["train", "--pipeline", str(fifo), "--data-root", str(data), "--output", str(c.path("out")),
                     "--no-mlflow"], [str(fifo), "FIFO", "regular file"], keep=[data])


def pipeline_device(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(["train", "--pipeline", "/dev/zero", "--data-root", str(data), "--output", str(c.path("out")),
                     "--no-mlflow"], ["--pipeline /dev/zero", "character device", "regular file"], keep=[data])


def data_check_json_fifo(c: Corpus) -> Scenario:
    data = c.class_folders()
    fifo = _fifo(c, "report.json")
    return Scenario(["data", "check", "-d", "custom", "-r", str(data), "--json", str(fifo)],
                    ["--json", str(fifo), "FIFO"], keep=[data])


def data_check_json_folder(c: Corpus) -> Scenario:
    data = c.class_folders()
    folder = c.path("reports")
    folder.mkdir()
    return Scenario(["data", "check", "-d", "custom", "-r", str(data), "--json", str(folder)],
                    ["--json", "is a folder", "report.json"], keep=[data])


# ------------------------------------------------------------------------------------- split-file labels
def _split_with_label(c: Corpus, label) -> tuple[Path, Path]:
    data = c.class_folders()
    split = c.split_json({"train": [["benign/benign0.png", 0, "benign"], ["malignant/malignant0.png", label,
                                                                          "malignant"]],
                          "val": [], "test": [["benign/benign1.png", 0, "benign"],
                                              ["malignant/malignant1.png", 1, "malignant"]]})
    return data, split


def split_label_bool(c: Corpus) -> Scenario:
    data, split = _split_with_label(c, True)
    return Scenario(["data", "check", "-d", "custom", "-r", str(data), "--split-file", str(split)],
                    [str(split), "train[1] has label True", "not true/false", "or a class name"],
                    keep=[data, split])


def split_label_huge(c: Corpus) -> Scenario:
    data, split = _split_with_label(c, 10**30)
    return Scenario(_train(c, data, "--split-file", str(split)),
                    [str(split), "label 1000000000000000000000000000000 is outside the class list (0..1)"],
                    keep=[data, split])


# --------------------------------------------------------------------------------------- data split
def fractions_nan(c: Corpus) -> Scenario:
    data = c.class_folders()
    out = c.path("split.json")
    return Scenario(["data", "split", "--data-root", str(data), "--output", str(out), "--fractions", "nan,0,0"],
                    ["--fractions nan,0,0", "from 0 to 1", "sum to 1"], keep=[data])


def fractions_no_test(c: Corpus) -> Scenario:
    data = c.class_folders()
    out = c.path("split.json")
    return Scenario(["data", "split", "--data-root", str(data), "--output", str(out), "--fractions", "1,0,0"],
                    ["--fractions 1,0,0", "test fraction is 0", "give it a share"], keep=[data])


# ------------------------------------------------------------------------------------------ options
def shots_huge(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(_with(_train(c, data), "--shots", "1000000000000"), ["--shots 1000000000000", "10000"],
                    keep=[data])


def seed_huge(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(_with(_train(c, data), "--seed", str(2**64)), [f"--seed {2**64}", "4294967295"], keep=[data])


def device_meta(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(_with(_train(c, data), "--device", "meta"), ["--device meta", "cpu or cuda"], keep=[data])


# ---------------------------------------------------------------------------------------------- CSV
def csv_two_path_columns(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",path"] + [l + ",img/benign0.png" for l in lines[1:]]) + "\n")
    return Scenario(_train(c, csv), ["export.csv", "column 'path' appears 2 times", "keep one 'path' column"],
                    keep=[csv.parent])


def csv_extra_fields(c: Corpus) -> Scenario:
    csv = c.csv_dataset(["img/benign0.png,benign,train,left,extra"])
    return Scenario(["data", "check", "-d", "custom", "-r", str(csv)],
                    ["export.csv", "has 5 fields but the header names 3", "quote a value"], keep=[csv.parent])


# -------------------------------------------------------------------------------------------- DICOM
def dicom_slope_huge(c: Corpus) -> Scenario:
    import pydicom

    data = c.class_folders()
    path = data / "malignant" / "slope1e30.dcm"
    c.dicom(path)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = "1e30", 0
    ds.save_as(path)
    return Scenario(_train(c, data), ["slope1e30.dcm", "RescaleSlope (0028,1053) is 1e+30", "overflow",
                                      "fix the tag"], keep=[data])


# --------------------------------------------------------------------------------------------- YAML
def yaml_nul_byte(c: Corpus) -> Scenario:
    data = c.class_folders()
    p = c.pipeline({"description": "robustness\0row"})
    p.write_text(p.read_text().replace("\\0", "\0"))
    return Scenario(["train", "--pipeline", str(p), "--data-root", str(data), "--output", str(c.path("out")),
                     "--no-mlflow"], [str(p), "not valid YAML", "#x0000"], keep=[data, p])


# -------------------------------------------------------------------------------------------- MLflow
CLOSED_DB = "postgresql+psycopg2://reader:s3cret@127.0.0.1:9/mlflow"


def tracking_closed_database(c: Corpus) -> Scenario:
    image = c.image(c.path("probe.png"), seed=3)
    return Scenario(["predict", "--model", "models:/m@champion", str(image), "--tracking-uri", CLOSED_DB,
                     "--device", "cpu"],
                    ["postgresql+psycopg2://reader:***@127.0.0.1:9/mlflow", "cannot be used", "--no-mlflow"])


ROWS = [
    Row("results-template-attribute", ITEM, "run folder", "results.json template `{0.__class__.__mro__}`, `predict`",
        results_template_attribute, issue=ISSUE),
    Row("results-one-class", ITEM, "run folder", "results.json classnames `['benign']`, `predict`",
        results_one_class, issue=ISSUE),
    Row("results-look-alike-classes", ITEM, "run folder", "results.json classnames `benign`, `Benign\\u200b`",
        results_look_alike_classes, issue=ISSUE),
    Row("results-backbone-kwargs-callable", ITEM, "run folder",
        "results.json run.backbone_kwargs `{model_factory: os.system}`, `evaluate`", results_backbone_kwargs_callable,
        issue=ISSUE),
    Row("method-json-callable", ITEM, "run folder", "method.json `{method: os.system}`, `predict`",
        method_json_callable, issue=ISSUE),
    Row("split-file-fifo", ITEM, "special files", "`--split-file` a FIFO", split_file_fifo, issue=ISSUE),
    Row("pipeline-yaml-fifo", ITEM, "special files", "`--pipeline` a FIFO named .yaml", pipeline_yaml_fifo,
        issue=ISSUE),
    Row("pipeline-device", ITEM, "special files", "`--pipeline /dev/zero`", pipeline_device, issue=ISSUE),
    Row("data-check-json-fifo", ITEM, "special files", "`data check --json` a FIFO", data_check_json_fifo,
        issue=ISSUE),
    Row("data-check-json-folder", ITEM, "outputs", "`data check --json` an existing folder", data_check_json_folder,
        issue=ISSUE),
    Row("split-label-bool", ITEM, "data: splits", "split-file label `true`", split_label_bool, issue=ISSUE),
    Row("split-label-huge", ITEM, "data: splits", "split-file label `10**30`, `train`", split_label_huge,
        issue=ISSUE),
    Row("split-fractions-nan", ITEM, "option validation", "`data split --fractions nan,0,0`", fractions_nan,
        issue=ISSUE),
    Row("split-fractions-no-test", ITEM, "option validation", "`data split --fractions 1,0,0`", fractions_no_test,
        issue=ISSUE),
    Row("shots-huge", ITEM, "option validation", "`train --shots 1000000000000`", shots_huge, issue=ISSUE),
    Row("seed-huge", ITEM, "option validation", "`train --seed 2**64`", seed_huge, issue=ISSUE),
    Row("device-meta", ITEM, "option validation", "`train --device meta`", device_meta, issue=ISSUE),
    Row("csv-two-path-columns", ITEM, "data: CSV", "CSV header `path,label,split,path`", csv_two_path_columns,
        issue=ISSUE),
    Row("csv-extra-fields", ITEM, "data: CSV", "CSV row with 5 fields under a 3-column header", csv_extra_fields,
        issue=ISSUE),
    Row("dicom-slope-1e30", ITEM, "DICOM", "DICOM with RescaleSlope 1e30 in a class folder", dicom_slope_huge,
        issue=ISSUE),
    Row("yaml-nul-byte", ITEM, "config files", "pipeline YAML holding a NUL byte", yaml_nul_byte, issue=ISSUE),
    Row("tracking-closed-database", ITEM, "MLflow", "`--tracking-uri postgresql://...` of a closed port",
        tracking_closed_database, issue=ISSUE),
]

_FIFO_ROWS = {"split-file-fifo", "pipeline-yaml-fifo", "data-check-json-fifo"}


@pytest.mark.parametrize("row", [pytest.param(r, marks=[needs_fifo] if r.id in _FIFO_ROWS else [], id=r.id)
                                 for r in ROWS])
def test_row(row: Row, tmp_path):
    run_row(row, tmp_path)


# ------------------------------------------------------------------------------ what the rows cannot reach
def test_closed_database_fails_within_seconds(tmp_path):
    """MLflow alone retried a closed database for ~100 s; one bounded try answers in seconds."""
    start = time.monotonic()
    out = run_cli(tracking_closed_database(Corpus(tmp_path)).argv)
    assert out.code == 2, out.text
    assert time.monotonic() - start < 30, "the closed database was retried"
    assert "s3cret" not in out.text  # the password is never printed


def test_model_config_labels_are_checked(tmp_path):
    """model_config.json (model folders, registered models) is held to the same class and template rules."""
    from medclipsvd.errors import AdapterError
    from medclipsvd.serving.trained_run import MODEL_FORMAT, load_model_config

    path = tmp_path / "model_config.json"
    good = {"format": MODEL_FORMAT, "classnames": ["benign", "malignant"], "template": "a photo of a {}.",
            "preprocess": []}
    path.write_text(json.dumps(good))
    assert load_model_config(path)["classnames"] == ["benign", "malignant"]
    for change, words in (({"template": "{0.__class__}"}, "exactly one '{}'"), ({"template": 7}, "'template'"),
                          ({"classnames": ["benign"]}, "at least two"),
                          ({"classnames": ["benign", "b\u0435nign"]}, "cannot tell apart"),
                          ({"classnames": "benign,malignant"}, "list of non-empty class names")):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(AdapterError, match=None) as exc:
            load_model_config(path)
        assert str(path) in str(exc.value) and words in str(exc.value), str(exc.value)


def test_split_labels_may_be_class_names_and_large_labels_name_no_classes(tmp_path):
    """The type rule refuses what is no class index (a float, a boolean), not what split files legitimately
    hold (class names); a label beyond the entry count names no class (10**30 made a list of 10**30 names)."""
    from medclipsvd.data.sources.layouts import classnames_from_entries, read_split_json
    from medclipsvd.errors import DataError

    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [["a.png", "benign", "benign"], ["b.png", 1, "tumour"],
                                          ["c.png", 10**30, "huge"]], "val": [], "test": []}))
    data = read_split_json(path)
    assert data["train"][0][1] == "benign"
    assert classnames_from_entries(data) == ["<unnamed 0>", "tumour"]
    path.write_text(json.dumps({"train": [["a.png", 0.0, "benign"]], "val": [], "test": []}))
    with pytest.raises(DataError, match="label 0.0"):
        read_split_json(path)


def test_data_check_fails_an_empty_train_split_and_a_missing_test_key(tmp_path):
    """`data check` names both as problems and exits 1 (a run could neither train nor be scored)."""
    c = Corpus(tmp_path)
    data = c.class_folders()
    for name, doc, words in (
            ("no-train.json", {"train": [], "val": [], "test": [["benign/benign0.png", 0, "benign"],
                                                               ["malignant/malignant0.png", 1, "malignant"]]},
             "train"),
            ("no-test-key.json", {"train": [["benign/benign0.png", 0, "benign"],
                                            ["malignant/malignant0.png", 1, "malignant"]], "val": []}, "test")):
        split = c.split_json(doc, name=f"data/{name}")
        out = run_cli(["data", "check", "-d", "custom", "-r", str(data), "--split-file", str(split)])
        assert out.code == 1, out.text
        assert "result: FAILED" in out.text and "result: complete" not in out.text
        assert any(words in l and "empty" in l for l in out.text.splitlines() if "problem" in l), out.text


def test_fractions_that_sum_to_one_still_write_a_split(tmp_path):
    """The positive control of the --fractions rows: a valid triple is written."""
    c = Corpus(tmp_path)
    data = c.class_folders()
    out = run_cli(["data", "split", "--data-root", str(data), "--output", str(c.path("split.json")),
                   "--fractions", "0.5,0.25,0.25"])
    assert out.code == 0, out.text
    doc = json.loads(c.path("split.json").read_text())
    assert doc["train"] and doc["test"] and len(doc["train"]) + len(doc["val"]) + len(doc["test"]) == 12


def test_tracking_uris_mlflow_cannot_use_are_refused_by_scheme():
    """An ftp:// URI used to fail deep in MLflow ("model registry functionality is unavailable") as an
    unexpected error; folder paths and the schemes MLflow stores runs at pass."""
    from medclipsvd.errors import TrackingError
    from medclipsvd.tracking.store import resolve_tracking_uri

    with pytest.raises(TrackingError, match=r"tracking URI ftp://example.invalid/x: .*ftp: URI.*--no-mlflow"):
        resolve_tracking_uri("ftp://example.invalid/x")
    assert resolve_tracking_uri("http://127.0.0.1:9") == "http://127.0.0.1:9"
    assert resolve_tracking_uri("file:///tmp/mlruns") == "file:///tmp/mlruns"


def test_registry_names_with_control_characters_are_refused():
    """MLflow registers a name holding a newline, which no models:/ URI can name again."""
    from medclipsvd.errors import TrackingError
    from medclipsvd.tracking.registry_checks import check_registry_names

    with pytest.raises(TrackingError, match=r"--name 'x\\ny': contains a control character"):
        check_registry_names("x\ny")
    with pytest.raises(TrackingError, match=r"--alias 'a\\tb': contains a control character"):
        check_registry_names("chest-xray", alias="a\tb")
    check_registry_names("chest-xray", alias="champion")  # the positive control


def test_outbox_journal_too_deep_is_unreadable_not_a_crash(tmp_path):
    """A planted meta.json of 100000 nested arrays is listed as unreadable (it was a RecursionError)."""
    from medclipsvd.tracking.outbox import META, pending_runs

    (tmp_path / "planted").mkdir()
    (tmp_path / "planted" / META).write_text("[" * 100000 + "]" * 100000)
    unreadable: list = []
    assert pending_runs(tmp_path, unreadable) == []
    assert unreadable and "nests" in unreadable[0][1]


def test_a_journal_artefact_at_the_run_root_is_accepted(tmp_path):
    """artifact_path "" is the run's root, like None (what `log_artifact(path)` records); `..` stays refused."""
    from medclipsvd.tracking.outbox import JournalError, RunJournal

    d = tmp_path / "j"
    (d / "files" / "0").mkdir(parents=True)
    (d / "files" / "0" / "results.json").write_text("{}\n")
    (d / "meta.json").write_text(json.dumps({"local_id": "j"}))
    journal = RunJournal.open(d)
    event = {"seq": 0, "t": "artifact", "src": "/gone/results.json", "copy": "files/0/results.json"}
    for root in ("", None):
        path, files = journal.kept_files({**event, "artifact_path": root})
        assert [f.name for f, _ in files] == ["results.json"]
    with pytest.raises(JournalError):
        journal.kept_files({**event, "artifact_path": "../escaped"})
