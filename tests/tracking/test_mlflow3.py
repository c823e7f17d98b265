"""MLflow 3 objects with a SQLite tracking URI (no server): `train --register` logs a LoggedModel that the
registered version points at, the train and test sets as dataset inputs (digests, no file names), system
metrics; MLflow's INFO lines stay out of the output; a run that fails on a missing data root leaves no run;
an `interpret` run nests under its training run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tracking_helpers import run_cli, train_args
from tracking_synth import CLASSES, make_dataset

NAME = "tiny-sqlite"


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("mlflow3")
    data = make_dataset(work / "data")
    uri = f"sqlite:///{work / 'store' / 'mlflow.db'}"
    proc = run_cli(train_args(data, work / "run", uri, "--register", "--name", NAME, "--alias", "champion"),
                   cwd=work)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return work, data, uri, log


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def test_logged_model_is_the_registered_source(sqlite_run):
    import mlflow

    work, _, uri, log = sqlite_run
    client = _client(uri)
    mv = client.get_model_version_by_alias(NAME, "champion")
    exp = client.get_experiment_by_name("medclipsvd")
    mlflow.set_tracking_uri(uri)  # models:/<id> URIs resolve through the process-wide tracking URI
    try:
        _check_model(mlflow, client, exp, mv, work, uri, log)
    finally:
        mlflow.set_tracking_uri(None)


def _check_model(mlflow, client, exp, mv, work, uri, log):
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert len(models) == 1
    model = models[0]
    assert model.source_run_id == mv.run_id and str(model.status).endswith("READY")
    assert mv.source == f"models:/{model.model_id}"
    run = client.get_run(mv.run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert f"models:/{model.model_id}" in log
    # signature and an input example that is a synthetic array, not a file of the training data
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(work / "dl"),
                                                     tracking_uri=uri))
    mlmodel = (local / "MLmodel").read_text()
    assert "signature" in mlmodel and "saved_input_example_info" in mlmodel
    example = next(local.glob("input_example*.json")).read_text()
    assert "/" not in example and ".dcm" not in example and ".png" not in example
    assert json.loads(example)["data"][0][0][0][:3] == [0, 8, 16]


def test_datasets_and_system_metrics(sqlite_run):
    work, data, uri, _ = sqlite_run
    client = _client(uri)
    run = client.get_run(client.get_model_version_by_alias(NAME, "champion").run_id)
    inputs = {[t.value for t in d.tags if t.key == "mlflow.data.context"][0]: d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "test"}
    train, test = inputs["train"], inputs["test"]
    assert json.loads(train.source)["uri"] == data.resolve().as_uri()
    assert len(train.digest) == 32 and train.digest != test.digest
    profile = json.loads(test.profile)
    assert profile["num_samples"] == 6 and set(profile["class_counts"]) == set(CLASSES)
    # no file name below the data root is logged
    files = [p.name for p in data.rglob("*") if p.is_file()]
    blob = json.dumps([[d.dataset.name, d.dataset.source, d.dataset.profile] for d in run.inputs.dataset_inputs])
    assert not [f for f in files if f in blob]
    system = [k for k in run.data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system


def test_no_mlflow_chatter_in_the_output(sqlite_run):
    *_, log = sqlite_run
    assert "INFO mlflow" not in log and "Downloading artifacts" not in log and "View run" not in log


def test_missing_data_root_leaves_no_run(sqlite_run, tmp_path):
    from mlflow.entities import ViewType

    work, _, uri, _ = sqlite_run
    client = _client(uri)
    exp = client.get_experiment_by_name("medclipsvd")
    before = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    proc = run_cli(train_args(tmp_path / "nowhere", tmp_path / "run", uri), cwd=tmp_path)
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr
    after = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert len(after) == len(before)
    assert not (tmp_path / "mlruns" / "outbox").exists() or not any((tmp_path / "mlruns" / "outbox").iterdir())


def test_run_failing_before_work_is_discarded(tmp_path):
    """The tracker's safety net for errors raised inside a run before anything was logged."""
    from mlflow.entities import ViewType

    from medclipsvd.errors import DataError
    from medclipsvd.tracking import make_tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = make_tracker(uri, True, outbox=tmp_path / "outbox", system_metrics=False)
    with pytest.raises(DataError):
        with tracker.run("doomed"):
            tracker.log_params({"a": 1})
            raise DataError("no such folder")
    with pytest.raises(RuntimeError):
        with tracker.run("kept"):
            raise RuntimeError("a crash is kept as FAILED")
    runs = _client(uri).search_runs([tracker.experiment_id()], run_view_type=ViewType.ACTIVE_ONLY)
    assert [(r.info.run_name, r.info.status) for r in runs] == [("kept", "FAILED")]
    assert not list((tmp_path / "outbox").iterdir())


def test_interpret_run_nests_under_its_training_run(sqlite_run, tmp_path):
    from typer.testing import CliRunner

    from medclipsvd.cli.app import app

    work, _, uri, _ = sqlite_run
    result = CliRunner().invoke(app, ["interpret", "--adapter", str(work / "run" / "adapter"), "--heads", "0",
                                      "--output", str(tmp_path / "interp"), "--device", "cpu",
                                      "--tracking-uri", uri])
    assert result.exit_code == 0, result.output[-3000:]
    client = _client(uri)
    train_id = json.loads((work / "run" / "results.json").read_text())["mlflow_run_id"]
    exp = client.get_experiment_by_name("medclipsvd")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`medclipsvd.command` = 'interpret'")
    assert len(runs) == 1
    tags = runs[0].data.tags
    assert tags["mlflow.parentRunId"] == train_id and tags["medclipsvd.training_run_id"] == train_id
