"""Acceptance: a tiny training through a real MLflow server, registered as models:/tiny-chest@champion, loaded
in a fresh process (pyfunc and `mlflow models predict`) and by `medclipsvd predict`, with probabilities equal
to the in-process evaluation; and no DICOM patient tag anywhere in the store or the logs."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tracking_helpers import (MODEL_NAME, PYTHON, encoded, in_process_probs, predict_in_fresh_process, real_files,
                              run_cli)
from tracking_synth import CLASSES, PHI_NEEDLES


def _test_files(data: Path) -> list[str]:
    return sorted(str(p) for p in (data / "test").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def fresh_predictions(trained_run):
    files = _test_files(trained_run.data) + real_files()
    frame = predict_in_fresh_process(f"models:/{MODEL_NAME}@champion", files, trained_run.server.uri)
    return files, frame


def test_run_is_tracked(trained_run):
    from mlflow import MlflowClient

    client = MlflowClient(trained_run.server.uri)
    run = client.get_run(trained_run.run_id)
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["dataset"] == "custom" and params["backbone"] == "tiny-biomedclip" and params["shots"] == "2"
    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parents[2] / "pipelines" / "demo.yaml").read_text())
    assert float(params["hp.lr"]) == demo["hparams"]["lr"]  # the demo pipeline's resolved hyper-parameter
    for key, value in {"K": "2", "seed": "1", "dataset": "custom", "protocol": "few_shot",
                       "backbone": "tiny-biomedclip", "method": "svd"}.items():
        assert tags[key] == value, key
    assert tags["medclipsvd.version"]
    losses = client.get_metric_history(trained_run.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    assert len(client.get_metric_history(trained_run.run_id, "train/lr")) == 4
    results = json.loads((trained_run.output / "results.json").read_text())
    assert run.data.metrics["test/accuracy"] == pytest.approx(results["summary"]["test"])
    top = {a.path for a in client.list_artifacts(trained_run.run_id)}
    assert {"adapter", "plots", "results.json"} <= top
    # the served model is an MLflow 3 LoggedModel, the run's output, and the registered version's source
    [output] = run.outputs.model_outputs
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").source == f"models:/{output.model_id}"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"custom-train", "custom-test"}
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert "INFO mlflow" not in trained_run.log and "Downloading artifacts" not in trained_run.log
    adapter = {a.path for a in client.list_artifacts(trained_run.run_id, "adapter")}
    assert adapter == {"adapter/adapter_config.json", "adapter/adapter.safetensors"}
    assert f"MLflow run {trained_run.run_id}" in trained_run.log
    assert "alias models:/tiny-chest@champion" in trained_run.log


def test_registered_version_has_alias_tags_and_no_pickles(trained_run, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(trained_run.server.uri)
    mv = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert mv.tags["backbone"] == "tiny-biomedclip" and mv.tags["bundled_backbone"] == "false"
    assert len(mv.tags["backbone_fingerprint"]) == 32
    assert mv.current_stage in (None, "None")  # aliases, not stages
    mlflow.set_tracking_uri(trained_run.server.uri)  # models:/<id> resolves through the process-wide URI
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp_path)))
    finally:
        mlflow.set_tracking_uri(None)
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert "pyfunc_model.py" in names and "artifacts/model_config.json" in names
    assert "artifacts/adapter/adapter.safetensors" in names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin"))], names
    mlmodel = (local / "MLmodel").read_text()
    assert "model_code_path" in mlmodel and "python_model.pkl" not in mlmodel
    config = json.loads((local / "artifacts" / "model_config.json").read_text())
    assert config["classnames"] == list(CLASSES) and config["backbone"]["fingerprint"] == mv.tags[
        "backbone_fingerprint"]


def test_fresh_process_matches_in_process_evaluation(trained_run, fresh_predictions):
    files, frame = fresh_predictions
    assert any(f.endswith(".dcm") for f in files) and any(f.endswith(".png") for f in files)
    results = json.loads((trained_run.output / "results.json").read_text())
    expected = in_process_probs(trained_run.output / "adapter", files, list(CLASSES), results["template"])
    got = frame[[f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert list(frame["label"]) == [CLASSES[i] for i in expected.argmax(1)]
    # the served model reproduces the run's own test accuracy
    test_files = _test_files(trained_run.data)
    truth = [CLASSES.index(Path(f).parent.name) for f in test_files]
    acc = 100.0 * np.mean(frame["label_index"].to_numpy()[: len(test_files)] == np.array(truth))
    assert acc == pytest.approx(results["summary"]["test"])


def test_mlflow_models_predict_cli(trained_run, fresh_predictions, tmp_path):
    files, frame = fresh_predictions
    inp = tmp_path / "input.json"
    inp.write_text(json.dumps({"dataframe_split": {"columns": ["image"], "data": [[encoded(f)] for f in files]}}))
    out = tmp_path / "out.json"
    env = dict(os.environ, MLFLOW_TRACKING_URI=trained_run.server.uri)
    proc = subprocess.run([PYTHON, "-m", "mlflow", "models", "predict", "-m", f"models:/{MODEL_NAME}@champion",
                           "-i", str(inp), "-t", "json", "-o", str(out), "--env-manager", "local"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    payload = json.loads(out.read_text())
    rows = payload["predictions"] if isinstance(payload, dict) else payload
    got = np.array([[r[f"prob_{c}"] for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, frame[[f"prob_{c}" for c in CLASSES]].to_numpy(), atol=1e-6)


def test_predict_command_prints_table(trained_run, fresh_predictions, tmp_path):
    files, frame = fresh_predictions
    from typer.testing import CliRunner

    from medclipsvd.cli.app import app

    csv = tmp_path / "pred.csv"
    # in this process (the model is tiny; a subprocess would only add start-up time)
    result = CliRunner().invoke(app, ["predict", "--model", f"models:/{MODEL_NAME}@champion", "--tracking-uri",
                                      trained_run.server.uri, "--output", str(csv), *files[:3]],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output[-3000:]
    assert "predictions of models:/tiny-chest@champion" in result.output
    for f in files[:3]:
        assert Path(f).name in result.output
    import pandas as pd

    table = pd.read_csv(csv)
    assert list(table["file"]) == files[:3]
    np.testing.assert_allclose(table[f"prob_{CLASSES[0]}"], frame[f"prob_{CLASSES[0]}"][:3], atol=1e-6)
    missing = run_cli(["predict", "--model", f"models:/{MODEL_NAME}@champion", "--tracking-uri",
                       trained_run.server.uri, str(tmp_path / "nope.dcm")], cwd=tmp_path)
    assert missing.returncode == 2 and "nope.dcm" in missing.stderr and "Traceback" not in missing.stderr


def _search(root: Path, needles: list[str]) -> list[tuple[str, str]]:
    hits = []
    encoded = [(n, n.encode(), n.replace("^", " ").encode()) for n in needles]
    for f in root.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            hits += [(str(f), n) for n, raw, spaced in encoded if raw in blob or spaced in blob]
    return hits


def test_no_patient_tags_in_store_or_logs(trained_run, fresh_predictions):
    # The search must be able to fail: the training DICOMs do hold the values.
    assert {n for _, n in _search(trained_run.data, PHI_NEEDLES)} == set(PHI_NEEDLES)
    server = trained_run.server
    store_root = Path(server.backend.removeprefix("sqlite:///")).parent  # mlflow.db (+ journal) and artifacts
    assert (store_root / "mlflow.db").stat().st_size > 0 and any(server.artifacts.rglob("*.safetensors"))
    leaks = _search(store_root, PHI_NEEDLES)
    leaks += _search(trained_run.workdir, PHI_NEEDLES)  # CLI log, ./mlruns outbox, run folder
    leaks += [("server log", n) for n in PHI_NEEDLES if n in server.log.read_text(errors="replace")]
    leaks += [("train CLI output", n) for n in PHI_NEEDLES if n in trained_run.log]
    assert not leaks, leaks
