"""Failure handling: a server that is down before training (clear error, exit 2, nothing trained) and one
that dies during a run (training finishes, results on disk and in the outbox, `medclipsvd sync` uploads)."""
from __future__ import annotations

import http.server
import threading
import time

import pytest
from tracking_helpers import free_port, run_cli, start_server, train_args

from medclipsvd.tracking import NullTracker, TrackingError, make_tracker


def test_unreachable_server_stops_train_before_any_work(phi_dataset, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = run_cli(train_args(phi_dataset, out, uri), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert uri in proc.stderr and "--no-mlflow" in proc.stderr and "mlflow server" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing trained, nothing written
    assert time.monotonic() - t0 < 60


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def not_mlflow_server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("kind, expect", [
    ("closed-port", "no answer"),
    ("not-mlflow", "HTTP 404"),
    ("bad-database", "cannot be used"),
])
def test_make_tracker_errors(kind, expect, not_mlflow_server, tmp_path):
    uri = {"closed-port": f"http://127.0.0.1:{free_port()}",
           "not-mlflow": not_mlflow_server,
           "bad-database": "postgresql://nobody:secret-pw@127.0.0.1:%d/none" % free_port()}[kind]
    with pytest.raises(TrackingError) as err:
        make_tracker(uri, True)
    message = str(err.value)
    assert expect in message and "--no-mlflow" in message
    assert "secret-pw" not in message  # passwords never echoed


def test_disabled_tracking_is_null():
    assert isinstance(make_tracker("http://127.0.0.1:1", False), NullTracker)


class _KillAtStep:
    """Wraps the tracker the engine gets; kills the server when the trainer logs step `step`."""

    def __init__(self, tracker, server, step):
        self._t, self._server, self._step = tracker, server, step

    def __getattr__(self, name):
        return getattr(self._t, name)

    def log_metrics(self, metrics, step=None):
        if step == self._step:
            self._server.stop()
        self._t.log_metrics(metrics, step)


def test_server_killed_during_run_then_sync(phi_dataset, tmp_path, capfd, monkeypatch):
    from mlflow import MlflowClient

    from medclipsvd.engine.pipeline_spec import spec_from_pipeline

    from medclipsvd.engine.run import run_experiment
    from medclipsvd.tracking.outbox import pending_runs
    from medclipsvd.tracking.sync import sync_outbox

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    base = tmp_path / "server"
    base.mkdir()
    backend = f"sqlite:///{base / 'mlflow.db'}"
    server = start_server(backend, base / "artifacts", base / "server.log")
    try:
        tracker = make_tracker(server.uri, True, outbox=tmp_path / "outbox")
        spec = spec_from_pipeline("demo", data_root=str(phi_dataset), output=str(tmp_path / "run"),
                                  backbone="tiny-biomedclip", shots=2, seed=3, max_steps=4, device="cpu",
                                  progress=False)
        results = run_experiment(spec, tracker=_KillAtStep(tracker, server, 2))
    finally:
        server.stop()
    # training finished and its results are on disk
    assert (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "adapter").is_dir()
    assert results["train"]["steps"] == 4
    err = capfd.readouterr().err
    assert "lost the MLflow server" in err and "medclipsvd sync" in err
    assert not tracker.last_run_complete
    [journal] = pending_runs(tmp_path / "outbox")
    run_id = journal.meta["server_run_id"]
    assert run_id and journal.finished and journal.sent < len(journal.events)
    kept = [e for e in journal.events if e["t"] == "artifact"]
    assert kept and all((journal.dir / e["copy"]).exists() for e in kept)

    # the server comes back (same database and artefact store, new port); sync completes the run
    server2 = start_server(backend, base / "artifacts", base / "server2.log")
    try:
        messages = []
        [res] = sync_outbox(tmp_path / "outbox", tracking_uri=server2.uri, log=messages.append)
        assert res.status == "uploaded" and res.run_id == run_id
        client = MlflowClient(server2.uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        steps = sorted({m.step for m in client.get_metric_history(run_id, "train/loss")})
        assert steps == [1, 2, 3, 4]
        assert run.data.metrics["test/accuracy"] == pytest.approx(results["summary"]["test"])
        assert run.data.params["seed"] == "3" and run.data.tags["K"] == "2"
        top = {a.path for a in client.list_artifacts(run_id)}
        assert {"adapter", "plots", "results.json"} <= top
        assert not pending_runs(tmp_path / "outbox")
        assert sync_outbox(tmp_path / "outbox", tracking_uri=server2.uri, log=messages.append) == []
        # once synced, the run registers like any other (its adapter came from the outbox copy)
        from medclipsvd.tracking.registry import register_run

        reg = register_run(run_id, "after-sync", alias="champion", tracking_uri=server2.uri)
        assert client.get_model_version_by_alias("after-sync", "champion").run_id == run_id
        assert reg.source == f"models:/{reg.model_id}" and client.get_logged_model(reg.model_id).source_run_id == run_id
    finally:
        server2.stop()


def test_sync_creates_runs_unknown_to_the_target(mlflow_server, tmp_path):
    """A run journalled while no server was reachable at all (offline from its first event), with a nested
    child, is created on the target by `medclipsvd sync`, parent link included."""
    from mlflow import MlflowClient

    from medclipsvd.tracking.mlflow_tracker import MlflowTracker
    from medclipsvd.tracking.sync import sync_outbox

    tracker = MlflowTracker(f"http://127.0.0.1:{free_port()}", experiment="offline-test", outbox=tmp_path / "box")
    tracker.online = False  # as after a lost connection
    artefact = tmp_path / "table.md"
    artefact.write_text("| K | acc |\n")
    with tracker.run("bench", tags={"pipeline": "demo"}):
        tracker.log_params({"suite": "BUSI"})
        with tracker.run("child", tags={"dataset": "BUSI"}):
            tracker.log_metrics({"test/accuracy": 50.0})
            tracker.log_metrics({"train/loss": 1.5}, step=1)
        tracker.log_artifact(str(artefact), "tables")
    artefact.unlink()  # the kept copy in the outbox is what gets uploaded
    proc = run_cli(["sync", "--outbox", str(tmp_path / "box"), "--tracking-uri", mlflow_server.uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 run(s) uploaded" in proc.stdout
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("offline-test")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"bench", "child"}
    assert runs["child"].data.tags["mlflow.parentRunId"] == runs["bench"].info.run_id
    assert runs["child"].data.metrics["test/accuracy"] == 50.0
    assert runs["bench"].data.params["suite"] == "BUSI"
    assert [a.path for a in client.list_artifacts(runs["bench"].info.run_id, "tables")] == ["tables/table.md"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert not any((tmp_path / "box").iterdir())


def test_train_register_after_lost_server_explains_next_steps():
    from types import SimpleNamespace

    from medclipsvd.tracking.cli_support import register_after_training

    said = []
    offline = SimpleNamespace(last_run_id="abc", last_run_complete=False, tracking_uri="http://x")
    register_after_training(offline, "chest", "champion", None, log=said.append)
    assert "not registered" in said[0] and "medclipsvd sync" in said[0]
    assert "medclipsvd register --run-id RUN_ID --name chest --alias champion" in said[0]
