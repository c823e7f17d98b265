"""Robustness rows for issue 16 item 8, the run / CLI / MLflow part: inputs that used to give a silently wrong
result and now give one clear line (or, for the survivable ones, a warning). ``eta_min`` above ``lr``;
``shots: true``; ``--output ''``; a run folder that already holds a run; deleted MLflow runs; registry names
MLflow would refuse after training; CSV and split files that are not UTF-8; a disk filling while the model is
logged; a SQLite store on a read-only disk. The rules every row is held to are in harness.py; rows whose
promise goes beyond them ("nothing was registered", "the run is marked FAILED") check it in ``AFTER``."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import Corpus, Row, Scenario, run_row

ISSUE, ITEM = 16, 8
TRAIN = ["train", "--pipeline", "custom"]
FAST_TRACKED = ["--backbone", "tiny-biomedclip", "--shots", "2", "--max-steps", "2", "--device", "cpu",
                "--no-system-metrics"]


def _train(c: Corpus, data, *extra: str, out: str = "out") -> list[str]:
    return [*TRAIN, "--data-root", str(data), "--output", str(c.path(out)), *c.FAST, *extra]


def _uri(c: Corpus, folder: str = "store") -> str:
    return f"sqlite:///{c.path(folder) / 'mlflow.db'}"


def _pipeline(body: dict, *mentions: str):
    def build(c: Corpus) -> Scenario:
        data = c.class_folders()
        p = c.pipeline(body)
        return Scenario(["train", "--pipeline", str(p), "--data-root", str(data), "--output", str(c.path("out")),
                         "--no-mlflow", "--device", "cpu"], [p.name, *mentions], keep=[data, p])

    return build


# ------------------------------------------------------------------------------ eta_min above the learning rate
def eta_min_above_lr(c: Corpus) -> Scenario:
    return _pipeline({"hparams": {"lr": 0.002, "eta_min": 933, "train_epochs": 1, "batch_size": 4}},
                     "hparams", "eta_min 933 is larger than lr 0.002", "set eta_min below")(c)


def lr_below_eta_min(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(_train(c, data, "--lr", "1e-7"), ["--lr 1e-07", "eta_min 1e-06", "climb", "raise --lr"],
                    keep=[data])


# ------------------------------------------------------------------------------------ YAML booleans as numbers
def yaml_shots_true(c: Corpus) -> Scenario:
    return _pipeline({"shots": True}, "shots", "true is not a number", "write a number")(c)


def yaml_hparams_batch_true(c: Corpus) -> Scenario:
    return _pipeline({"hparams": {"lr": 0.002, "train_epochs": 1, "batch_size": True}}, "hparams.batch_size",
                     "true is not a number")(c)


def yaml_hparams_epochs_false(c: Corpus) -> Scenario:
    return _pipeline({"hparams": {"lr": 0.002, "train_epochs": False, "batch_size": 4}}, "hparams.train_epochs",
                     "false is not a number")(c)


def yaml_hflip_one(c: Corpus) -> Scenario:
    return _pipeline({"augmentation": {"hflip": 1}}, "augmentation.hflip", "boolean")(c)


# ------------------------------------------------------------------------------------------- --output ''
def _empty_output(command: str, value: str = ""):
    def build(c: Corpus) -> Scenario:
        data = c.class_folders()
        adapter = _fake_run(c, "run")["adapter"]
        image = data / "benign" / "benign0.png"
        argv = {
            "train": _train(c, data),
            "evaluate": ["evaluate", "--adapter", str(adapter), "--no-mlflow"],
            "benchmark": ["benchmark", "--suite", "BUSI", "--data-root", str(data), "--no-mlflow"],
            "demo": ["demo"],
            "interpret": ["interpret", "--adapter", str(adapter), "--no-mlflow"],
            "predict": ["predict", "--adapter", str(adapter), str(image)],
            "export": ["export", "--adapter", str(adapter)],
            "data split": ["data", "split", "--data-root", str(data)],
        }[command]
        if "--output" in argv:
            argv[argv.index("--output") + 1] = value
        else:
            argv += ["--output", value]
        return Scenario(argv, ["--output", "current folder", "--output runs/"], keep=[data, c.path("run")])

    build.__name__ = f"empty_output_{command.replace(' ', '_')}"
    return build


def empty_out_old_spelling(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(["data", "split", "--data-root", str(data), "--out", "  "], ["--out", "only spaces",
                    "current folder"], keep=[data])


# ------------------------------------------------------------------------------- a folder that holds a run
def _fake_run(c: Corpus, name: str = "out", results: bool = True, checkpoint: bool = False) -> dict[str, Path]:
    """What `train` leaves in its --output (the bytes do not matter: the refusal comes before any is read)."""
    out = c.path(name)
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    (out / "adapter" / "adapter.safetensors").write_bytes(b"sigma of a run that took hours")
    (out / "adapter" / "adapter_config.json").write_text("{}")
    if results:
        (out / "results.json").write_text('{"summary": {"test": 81.5}}')
    if checkpoint:
        (out / "checkpoint").mkdir(exist_ok=True)
        (out / "checkpoint" / "checkpoint.pt").write_bytes(b"step 950 of 1000")
    return {"out": out, "adapter": out / "adapter"}


def train_over_completed(c: Corpus) -> Scenario:
    data = c.class_folders()
    out = _fake_run(c)["out"]
    return Scenario(_train(c, data), [f"--output {out}", "completed run", "results.json", "--force"],
                    keep=[data, out])


def resume_over_completed(c: Corpus) -> Scenario:
    data = c.class_folders()
    out = _fake_run(c, checkpoint=True)["out"]
    return Scenario(_train(c, data, "--resume"), [str(out), "nothing to resume", "--force"], keep=[data, out])


def train_over_interrupted(c: Corpus) -> Scenario:
    data = c.class_folders()
    out = _fake_run(c, results=False, checkpoint=True)["out"]
    return Scenario(_train(c, data), [str(out), "interrupted run", "--resume", "--force"], keep=[data, out])


def evaluate_over_evaluation(c: Corpus) -> Scenario:
    run = _fake_run(c)
    earlier = run["out"] / "evaluation"
    earlier.mkdir()
    (earlier / "evaluation.json").write_text('{"summary": {"test": 77.0}}')
    return Scenario(["evaluate", "--adapter", str(run["adapter"]), "--no-mlflow", "--device", "cpu"],
                    ["evaluation.json", "--force"], keep=[run["out"]])


def interpret_over_report(c: Corpus) -> Scenario:
    run = _fake_run(c)
    report = c.path("report")
    report.mkdir()
    (report / "report.md").write_text("# last week's report\n")
    return Scenario(["interpret", "--adapter", str(run["adapter"]), "--output", str(report), "--no-mlflow"],
                    [str(report), "report.md", "--force"], keep=[run["out"], report])


def export_over_bundle(c: Corpus) -> Scenario:
    run = _fake_run(c)
    bundle = c.path("bundle")
    bundle.mkdir()
    (bundle / "README.md").write_text("the bundle in production\n")
    return Scenario(["export", "--adapter", str(run["adapter"]), "--output", str(bundle)],
                    [str(bundle), "not empty", "--force"], keep=[run["out"], bundle])


def predict_over_csv(c: Corpus) -> Scenario:
    run = _fake_run(c)
    image = c.image(c.path("scan.png"))
    csv = c.path("preds.csv")
    csv.write_text("file,label\nyesterday.png,benign\n")
    return Scenario(["predict", "--adapter", str(run["adapter"]), "--output", str(csv), str(image)],
                    [str(csv), "already exists", "--force"], keep=[run["out"], csv])


# ------------------------------------------------------------------------------------ deleted MLflow runs
def _store(c: Corpus, deleted: bool = True, version: bool = False) -> tuple[str, str]:
    """A SQLite store holding one finished run (in MLflow's trash when `deleted`), optionally registered as
    version 1 of the model `tiny` first. Returns (tracking URI, run id)."""
    from mlflow import MlflowClient

    uri = _uri(c)
    c.path("store").mkdir(exist_ok=True)
    client = MlflowClient(uri)
    exp = client.create_experiment("medclipsvd", artifact_location=(c.path("store") / "artifacts").as_uri())
    run = client.create_run(exp, run_name="few_shot-custom-svd-k2-s1")
    client.set_terminated(run.info.run_id)
    if version:
        client.create_registered_model("tiny")
        client.create_model_version("tiny", (c.path("store") / "artifacts" / "nowhere").as_uri(),
                                    run_id=run.info.run_id)
    if deleted:
        client.delete_run(run.info.run_id)
    return uri, run.info.run_id


def register_deleted_run(c: Corpus) -> Scenario:
    uri, run_id = _store(c)
    return Scenario(["register", "--run-id", run_id, "--name", "tiny", "--tracking-uri", uri],
                    [f"run {run_id} is deleted", "mlflow runs restore"])


def predict_deleted_run_uri(c: Corpus) -> Scenario:
    uri, run_id = _store(c)
    image = c.image(c.path("scan.png"))
    model = f"runs:/{run_id}/model"
    return Scenario(["predict", "--model", model, "--tracking-uri", uri, str(image)],
                    [model, "is deleted", "mlflow runs restore"], keep=[image])


def predict_version_of_deleted_run(c: Corpus) -> Scenario:
    uri, run_id = _store(c, version=True)
    image = c.image(c.path("scan.png"))
    return Scenario(["predict", "--model", "models:/tiny/1", "--tracking-uri", uri, str(image)],
                    ["models:/tiny/1 comes from run", run_id, "is deleted"], keep=[image])


def sync_into_deleted_run(c: Corpus) -> Scenario:
    from medclipsvd.tracking.outbox import RunJournal

    uri, run_id = _store(c)
    box = c.path("outbox")
    journal = RunJournal.create(box, "a" * 32, {"name": "few_shot-custom-svd-k2-s1", "tags": {},
                                                "tracking_uri": uri, "experiment": "medclipsvd",
                                                "parent_local_id": None, "created_ms": 1, "pid": {},
                                                "server_run_id": run_id})
    journal.append({"t": "metrics", "data": {"test/accuracy": 81.5}, "step": None})
    journal.append({"t": "end", "status": "FINISHED"})
    return Scenario(["sync", "--outbox", str(box), "--tracking-uri", uri],
                    [run_id, "been deleted", "a journal only completes a run that is still open"], keep=[box])


# ------------------------------------------------------------------------ registry names checked before work
def _register_train(name: str, alias: str | None, *mentions: str):
    def build(c: Corpus) -> Scenario:
        data = c.class_folders()
        argv = [*TRAIN, "--data-root", str(data), "--output", str(c.path("out")), *FAST_TRACKED,
                "--tracking-uri", _uri(c), "--register", "--name", name, *(["--alias", alias] if alias else [])]
        return Scenario(argv, [*mentions, "Nothing was run"], keep=[data])

    return build


def register_bad_alias(c: Corpus) -> Scenario:
    return Scenario(["register", "--run-id", "0" * 32, "--name", "tiny", "--alias", "champ ion",
                     "--tracking-uri", _uri(c)], ["--alias 'champ ion'", "alphanumerics", "--alias champion"])


def register_bad_tag(c: Corpus) -> Scenario:
    return Scenario(["register", "--run-id", "0" * 32, "--name", "tiny", "--tag", "reviewed by?=x",
                     "--tracking-uri", _uri(c)], ["--tag", "reviewed by?", "--tag reviewed_by=radiology"])


# -------------------------------------------------------------------------------------- text encodings
def csv_cp1252(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    text = csv.read_text().replace("malignant,test", "lésion maligne,test")
    csv.write_bytes(text.encode("cp1252"))  # Excel's plain "CSV" on Windows
    return Scenario(_train(c, csv), [csv.name, "not UTF-8", "line 9", "CSV UTF-8"], keep=[csv.parent])


def csv_utf16(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    csv.write_bytes(csv.read_text().encode("utf-16"))  # Excel's "Unicode Text"
    return Scenario(["data", "check", "-d", "custom", "-r", str(csv)], [csv.name, "UTF-16", "save it as UTF-8"],
                    keep=[csv.parent])


def classnames_cp1252(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    csv.write_text(csv.read_text().replace(",benign,", ",0,").replace(",malignant,", ",1,"))
    names = csv.parent / "classnames.txt"
    names.write_bytes("bénin\nmalin\n".encode("latin-1"))
    return Scenario(_train(c, csv), ["classnames.txt", "not UTF-8", "line 1", "save it as UTF-8"],
                    keep=[csv.parent])


def split_json_latin1(c: Corpus) -> Scenario:
    data = c.class_folders()
    split = c.path("data/split.json")
    split.write_bytes('{"train": [["benign/benign0.png", 0, "bénin"]], "val": [], "test": []}'.encode("latin-1"))
    return Scenario(["data", "check", "-d", "custom", "-r", str(data), "--split-file", str(split)],
                    ["split.json", "not UTF-8", "save it as UTF-8"], keep=[data])


# ------------------------------------------------------------------------- a disk filling while logging
def model_logging_disk_full(c: Corpus) -> Scenario:
    data = c.class_folders()
    argv = [*TRAIN, "--data-root", str(data), "--output", str(c.path("out")), *FAST_TRACKED,
            "--tracking-uri", _uri(c)]
    return Scenario(argv, ["model of MLflow run", "was not logged", "the disk is full", "marked FAILED",
                           "medclipsvd register --run-id"], keep=[data],
                    env={"MEDCLIPSVD_OUTBOX": str(c.path("outbox"))})


def _fill_disk_for_models(monkeypatch) -> None:
    """ENOSPC for the files of a LoggedModel (artefact store: .../models/m-<id>/...); the run's own
    artefacts (results, adapter, plots) still go through, as on a disk with a little space left."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    real = LocalArtifactRepository.log_artifacts

    def log_artifacts(self, local_dir, artifact_path=None):
        if "/models/m-" in self.artifact_dir.replace(os.sep, "/"):
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(self.artifact_dir, "MLmodel"))
        return real(self, local_dir, artifact_path)

    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", log_artifacts)


def _run_marked_failed(root: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'store' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medclipsvd")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "disk is full" in runs[0].data.tags["medclipsvd.model_status"]
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert [str(m.status).rsplit(".", 1)[-1] for m in models] == ["FAILED"]  # not left PENDING
    assert (root / "out" / "results.json").is_file() and (root / "out" / "adapter").is_dir()


# ------------------------------------------------------------------------ a SQLite store on a read-only disk
_MOUNTS: list[Path] = []


def _read_only_folder(c: Corpus, with_db: bool) -> Path:
    """A folder the current user cannot write: a read-only tmpfs where we may mount (root), else chmod."""
    folder = c.path("ro")
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    if mounted:
        _MOUNTS.append(folder)
    elif os.geteuid() == 0:
        pytest.skip("root without mount rights: no way to make a folder read-only for this user")
    (folder / "store").mkdir()
    if with_db:  # made by another process: this one would keep the file open and the remount busy
        subprocess.run([sys.executable, "-c", "import sys; from mlflow import MlflowClient; "
                        "MlflowClient(sys.argv[1]).search_experiments()", f"sqlite:///{folder / 'store' / 'mlflow.db'}"],
                       check=True, capture_output=True)
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        for p in (folder / "store", folder):
            p.chmod(0o555)
    return folder / "store"


def _sqlite_read_only(with_db: bool):
    def build(c: Corpus) -> Scenario:
        data = c.class_folders()
        store = _read_only_folder(c, with_db)
        argv = [*TRAIN, "--data-root", str(data), "--output", str(c.path("out")), *FAST_TRACKED,
                "--tracking-uri", f"sqlite:///{store / 'mlflow.db'}"]
        return Scenario(argv, [str(store), "read-only" if os.geteuid() == 0 else "not writable", "Nothing was run",
                               "--tracking-uri", "--no-mlflow"], keep=[data, store])

    build.__name__ = f"sqlite_read_only_{'db' if with_db else 'folder'}"
    return build


@pytest.fixture(autouse=True)
def _unmount():
    yield
    while _MOUNTS:
        folder = _MOUNTS.pop()
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # lazy: never leave one behind


def _no_registration(root: Path) -> None:
    assert not (root / "out").exists(), "training started"
    assert not (root / "store").exists(), "the MLflow store was opened"


def _quick(root: Path) -> None:
    """The whole command (imports, pipeline, data) in far less than MLflow's ~109 s of retries; the store
    check itself is timed (< 2 s) in tests/tracking/test_trust_checks.py."""
    assert _LAST_SECONDS[0] < 60, f"took {_LAST_SECONDS[0]:.1f} s (MLflow retried the read-only store?)"


_LAST_SECONDS = [0.0]  # seconds the command of the last row took (its set-up not counted)

K = "config validation"
ROWS = [
    Row("eta-min-above-lr", ITEM, K, "pipeline hparams `lr: 0.002, eta_min: 933`", eta_min_above_lr, issue=ISSUE),
    Row("lr-below-eta-min", ITEM, K, "`--lr 1e-7` under the default eta_min 1e-6", lr_below_eta_min, issue=ISSUE),
    Row("yaml-shots-true", ITEM, K, "pipeline `shots: true`", yaml_shots_true, issue=ISSUE),
    Row("yaml-batch-size-true", ITEM, K, "pipeline hparams `batch_size: true`", yaml_hparams_batch_true,
        issue=ISSUE),
    Row("yaml-epochs-false", ITEM, K, "pipeline hparams `train_epochs: false`", yaml_hparams_epochs_false,
        issue=ISSUE),
    Row("yaml-hflip-1", ITEM, K, "pipeline augmentation `hflip: 1`", yaml_hflip_one, issue=ISSUE),
    *[Row(f"empty-output-{cmd.replace(' ', '-')}", ITEM, "CLI usage", f"`{cmd} --output ''`", _empty_output(cmd),
          issue=ISSUE)
      for cmd in ("train", "evaluate", "benchmark", "demo", "interpret", "predict", "export", "data split")],
    Row("blank-output-train", ITEM, "CLI usage", "`train --output '   '`", _empty_output("train", "   "),
        issue=ISSUE),
    Row("blank-out-old-spelling", ITEM, "CLI usage", "`data split --out '  '`", empty_out_old_spelling,
        issue=ISSUE),
    Row("train-over-completed-run", ITEM, "nothing lost", "`train` into a folder with results.json + adapter/",
        train_over_completed, issue=ISSUE),
    Row("resume-over-completed-run", ITEM, "nothing lost", "`train --resume` into a completed run",
        resume_over_completed, issue=ISSUE),
    Row("train-over-interrupted-run", ITEM, "nothing lost", "`train` (no --resume) over an interrupted checkpoint",
        train_over_interrupted, issue=ISSUE),
    Row("evaluate-over-evaluation", ITEM, "nothing lost", "`evaluate` where evaluation.json exists",
        evaluate_over_evaluation, issue=ISSUE),
    Row("interpret-over-report", ITEM, "nothing lost", "`interpret --output` holding a report",
        interpret_over_report, issue=ISSUE),
    Row("export-over-bundle", ITEM, "nothing lost", "`export --output` holding a bundle", export_over_bundle,
        issue=ISSUE),
    Row("predict-over-csv", ITEM, "nothing lost", "`predict --output` naming an existing CSV", predict_over_csv,
        issue=ISSUE),
    Row("register-deleted-run", ITEM, "MLflow registry", "`register --run-id` of a deleted run",
        register_deleted_run, issue=ISSUE),
    Row("predict-deleted-run-uri", ITEM, "MLflow registry", "`predict --model runs:/<deleted run>/model`",
        predict_deleted_run_uri, issue=ISSUE),
    Row("predict-version-of-deleted-run", ITEM, "MLflow registry", "`predict --model models:/N/1` whose run is "
        "deleted", predict_version_of_deleted_run, issue=ISSUE),
    Row("sync-into-deleted-run", ITEM, "MLflow registry", "outbox journal whose server run was deleted",
        sync_into_deleted_run, issue=ISSUE),
    Row("train-register-alias-latest", ITEM, "MLflow registry", "`train --register --alias latest`",
        _register_train("tiny", "latest", "--alias 'latest'", "reserved"), issue=ISSUE),
    Row("train-register-alias-v3", ITEM, "MLflow registry", "`train --register --alias v3`",
        _register_train("tiny", "v3", "--alias 'v3'", "reserved"), issue=ISSUE),
    Row("train-register-name-slash", ITEM, "MLflow registry", "`train --register --name chest/xray`",
        _register_train("chest/xray", None, "--name 'chest/xray'", "'/'", "--name chest-xray"), issue=ISSUE),
    Row("train-register-name-at", ITEM, "MLflow registry", "`train --register --name chest@xray`",
        _register_train("chest@xray", None, "--name 'chest@xray'", "'@'"), issue=ISSUE),
    Row("register-alias-space", ITEM, "MLflow registry", "`register --alias 'champ ion'`", register_bad_alias,
        issue=ISSUE),
    Row("register-tag-bad-key", ITEM, "MLflow registry", "`register --tag 'reviewed by?=x'`", register_bad_tag,
        issue=ISSUE),
    Row("csv-cp1252", ITEM, "file encoding", "CSV saved by Excel as Windows-1252 (`lésion`)", csv_cp1252,
        issue=ISSUE),
    Row("csv-utf16", ITEM, "file encoding", "CSV saved as UTF-16 (Excel 'Unicode Text')", csv_utf16, issue=ISSUE),
    Row("classnames-latin1", ITEM, "file encoding", "classnames.txt in Latin-1", classnames_cp1252, issue=ISSUE),
    Row("split-json-latin1", ITEM, "file encoding", "custom --split-file in Latin-1", split_json_latin1,
        issue=ISSUE),
    Row("model-logging-disk-full", ITEM, "full disk", "the disk fills while `train` logs the MLflow model",
        model_logging_disk_full, slow=True, issue=ISSUE),
    Row("sqlite-read-only-folder", ITEM, "read-only disk", "`--tracking-uri sqlite:///` in a read-only folder",
        _sqlite_read_only(False), issue=ISSUE),
    Row("sqlite-read-only-db", ITEM, "read-only disk", "an existing SQLite store on a read-only disk",
        _sqlite_read_only(True), issue=ISSUE),
]

PATCHES = {"model-logging-disk-full": _fill_disk_for_models}
AFTER = {"model-logging-disk-full": _run_marked_failed,
         "sqlite-read-only-folder": _quick, "sqlite-read-only-db": _quick,
         **{r.id: _no_registration for r in ROWS if r.id.startswith(("train-register-", "register-alias",
                                                                      "register-tag"))}}


@pytest.mark.parametrize("row", [pytest.param(r, marks=[pytest.mark.slow] if r.slow else [], id=r.id) for r in ROWS])
def test_row(row: Row, tmp_path, monkeypatch):
    import harness

    if row.id in PATCHES:
        PATCHES[row.id](monkeypatch)
    real = harness.run_cli

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            _LAST_SECONDS[0] = time.perf_counter() - t0

    monkeypatch.setattr(harness, "run_cli", timed)
    run_row(row, tmp_path)
    if row.id in AFTER:
        AFTER[row.id](tmp_path)


def test_empty_output_writes_nothing_into_the_current_folder(tmp_path):
    """`--output "$OUT"` with OUT unset used to train into the working directory."""
    from harness import run_cli

    c = Corpus(tmp_path)
    data = c.class_folders()
    argv = _train(c, data)
    argv[argv.index("--output") + 1] = ""
    before = sorted(p.name for p in tmp_path.iterdir())
    outcome = run_cli(argv, cwd=tmp_path)
    assert outcome.code == 2, outcome.text
    assert sorted(p.name for p in tmp_path.iterdir()) == before
