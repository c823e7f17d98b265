"""Fixtures for the tracking tests: a real `mlflow server` on 127.0.0.1 (SQLite backend, temp folders) for the
session, a tiny dataset whose DICOMs carry fake patient tags, and one CLI training run registered through it.
Helpers live in tracking_helpers.py and tracking_synth.py (unique module names, so that any set of test
folders collects together); this folder goes on the path for them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from tracking_helpers import MODEL_NAME, TrainedRun, run_cli, start_server, train_args  # noqa: E402
from tracking_synth import make_dataset  # noqa: E402


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-server")
    server = start_server(f"sqlite:///{base / 'mlflow.db'}", base / "artifacts", base / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def phi_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("hospital") / "data")


@pytest.fixture(scope="session")
def trained_run(mlflow_server, phi_dataset, tmp_path_factory) -> TrainedRun:
    """`medclipsvd train ... --register --name tiny-chest --alias champion` against the session server."""
    from mlflow import MlflowClient

    work = tmp_path_factory.mktemp("train-cli")
    out = work / "run"
    proc = run_cli(train_args(phi_dataset, out, mlflow_server.uri, "--register", "--name", MODEL_NAME,
                              "--alias", "champion"), cwd=work)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    (work / "cli.log").write_text(log)
    client = MlflowClient(mlflow_server.uri)
    version = client.get_model_version_by_alias(MODEL_NAME, "champion")
    return TrainedRun(mlflow_server, phi_dataset, out, work, version.run_id, log)
