"""Unit tests of the MLflow-side checks of issue 16, item 8: registry names against MLflow's own rules,
runs in MLflow's trash, a SQLite store that cannot be written, and a full disk while a model is logged.
No server and no training: a SQLite store in a temp folder, fakes for the tracker."""
from __future__ import annotations

import errno
import json
import os
import time
import types

import pytest

from medclipsvd.tracking.store import TrackingError


@pytest.mark.parametrize("name,alias,tags", [("chest-xray", "champion", None), ("CT kidney 2", "v_2", None),
                                             ("a.b_c", None, {"reviewed_by": "radiology"})])
def test_valid_registry_names_pass(name, alias, tags):
    from medclipsvd.tracking.registry_checks import check_registry_names

    check_registry_names(name, alias, tags)


@pytest.mark.parametrize("name,alias,tags,option", [
    ("", None, None, "--name"), ("   ", None, None, "--name"), ("a/b", None, None, "--name"),
    ("a:b", None, None, "--name"), ("a@b", None, None, "--name"), ("../x", None, None, "--name"),
    ("m", "latest", None, "--alias"), ("m", "LATEST", None, "--alias"), ("m", "v12", None, "--alias"),
    ("m", "champ ion", None, "--alias"), ("m", "", None, "--alias"), ("m", "a" * 256, None, "--alias"),
    ("m", None, {"bad?key": "x"}, "--tag"),
])
def test_invalid_registry_names_name_the_option(name, alias, tags, option):
    from medclipsvd.tracking.registry_checks import check_registry_names

    with pytest.raises(TrackingError) as info:
        check_registry_names(name, alias, tags)
    msg = str(info.value)
    assert msg.startswith(option) and "Nothing was run" in msg and "\n" not in msg, msg


def test_mlflow_itself_refuses_what_we_refuse(tmp_path):
    """The rules are MLflow's: the store refuses the same alias (so checking first loses nothing valid)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("m")
    client.create_model_version("m", (tmp_path / "x").as_uri())
    client.set_registered_model_alias("m", "champion", "1")  # the version takes an alias...
    for alias in ("latest", "v3", "champ ion"):
        with pytest.raises(MlflowException, match="reserved|Invalid alias"):  # ...but not these
            client.set_registered_model_alias("m", alias, "1")
    with pytest.raises(MlflowException, match="cannot contain"):
        client.create_registered_model("a/b")


@pytest.fixture(scope="module")
def deleted_run(tmp_path_factory):
    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("deleted")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=(base / "a").as_uri())
    live, gone = client.create_run(exp), client.create_run(exp)
    client.create_registered_model("m")
    client.create_model_version("m", (base / "a" / "x").as_uri(), run_id=gone.info.run_id)
    client.create_model_version("m", (base / "a" / "y").as_uri(), run_id=live.info.run_id)
    client.set_registered_model_alias("m", "old", "1")
    client.delete_run(gone.info.run_id)
    return uri, client, live.info.run_id, gone.info.run_id


def test_deleted_runs_are_refused_on_every_uri_form(deleted_run):
    from medclipsvd.tracking.registry_checks import check_model_source

    uri, _, live, gone = deleted_run
    for model in (f"runs:/{gone}/model", "models:/m/1", "models:/m@old"):
        with pytest.raises(TrackingError, match=f"{gone}.*is deleted"):
            check_model_source(model, uri)
    for model in (f"runs:/{live}/model", "models:/m/2", "models:/m/9", "models:/nope@x", "models:/m-123"):
        check_model_source(model, uri)  # live, or unknown (the loader words that itself)


def test_log_run_model_refuses_a_deleted_run(deleted_run, monkeypatch, tmp_path):
    from medclipsvd.tracking.registry import log_run_model

    uri, _, _, gone = deleted_run
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingError, match="is deleted.*not logged or registered"):
        log_run_model(gone, tracking_uri=uri)


def test_evaluations_do_not_nest_under_a_deleted_training_run(deleted_run, tmp_path):
    from medclipsvd.tracking.cli_support import training_run_id

    uri, client, live, gone = deleted_run
    for run_id in (live, gone):
        (tmp_path / run_id / "adapter").mkdir(parents=True)
        (tmp_path / run_id / "results.json").write_text(json.dumps({"mlflow_run_id": run_id}))
    tracker = types.SimpleNamespace(client=client)
    assert training_run_id(tmp_path / live / "adapter", tracker) == live
    with pytest.warns(UserWarning, match="is deleted"):
        assert training_run_id(tmp_path / gone / "adapter", tracker) is None


# ------------------------------------------------------------------------------------------- SQLite store
def test_read_only_file_system_is_found_without_opening_the_store(tmp_path, monkeypatch):
    from medclipsvd.tracking import store

    real = os.statvfs

    class ReadOnly:
        def __init__(self, st):
            self.st = st

        def __getattr__(self, name):
            return os.ST_RDONLY | self.st.f_flag if name == "f_flag" else getattr(self.st, name)

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingError) as info:
        store.probe(uri)
    assert time.perf_counter() - t0 < 2.0
    msg = str(info.value)
    assert "read-only file system" in msg and "--no-mlflow" in msg and "start the server" not in msg, msg
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_folder_without_write_permission(tmp_path):
    from medclipsvd.tracking import store

    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(TrackingError, match="not writable"):
            store.check_sqlite_writable(f"sqlite:///{folder / 'mlflow.db'}")
    finally:
        folder.chmod(0o755)


def test_writable_and_non_sqlite_stores_pass(tmp_path):
    from medclipsvd.tracking import store

    store.check_sqlite_writable(f"sqlite:///{tmp_path / 'mlflow.db'}")
    store.check_sqlite_writable("sqlite://")  # in memory
    store.check_sqlite_writable("http://127.0.0.1:5000")
    assert store.sqlite_path("sqlite:////a/b/mlflow.db?timeout=5").as_posix() == "/a/b/mlflow.db"


# ----------------------------------------------------------------------------- a full disk while logging
class _Tracker:
    def __init__(self):
        self.last_run_id, self.last_run_complete, self.tracking_uri = "r1", True, "sqlite:///x.db"
        self.outbox, self.offline_error = "outbox", None
        self.calls = []
        self.client = types.SimpleNamespace(
            log_batch=lambda run_id, tags: self.calls.append(("tags", run_id, tags[0].key)),
            set_terminated=lambda run_id, status: self.calls.append(("status", run_id, status)))


def _failing(exc):
    def log_run_model(run_id, tracking_uri=None):
        raise exc

    return log_run_model


def test_full_disk_while_logging_the_model_is_an_error_and_marks_the_run(monkeypatch):
    from medclipsvd.tracking import registry
    from medclipsvd.tracking.cli_support import ModelNotLoggedError, log_model_after_training

    monkeypatch.setattr(registry, "log_run_model", _failing(OSError(errno.ENOSPC, "No space left on device",
                                                                    "/store/models/m-1/MLmodel")))
    tracker = _Tracker()
    with pytest.raises(ModelNotLoggedError) as info:
        log_model_after_training(tracker, "svd", log=lambda m: None, output="runs/x", name="chest")
    msg = str(info.value)
    assert "the disk is full (/store/models/m-1/MLmodel)" in msg and "runs/x" in msg and "\n" not in msg
    assert "medclipsvd register --run-id r1 --name chest" in msg
    assert ("status", "r1", "FAILED") in tracker.calls and ("tags", "r1", "medclipsvd.model_status") in tracker.calls


def test_a_lost_server_while_logging_the_model_stays_a_note(monkeypatch):
    from medclipsvd.tracking import registry
    from medclipsvd.tracking.cli_support import log_model_after_training

    monkeypatch.setattr(registry, "log_run_model", _failing(ConnectionError("connection refused")))
    notes, tracker = [], _Tracker()
    assert log_model_after_training(tracker, "svd", log=notes.append) is None
    assert len(notes) == 1 and notes[0].startswith("note:") and tracker.calls == []


def test_a_store_that_filled_during_the_run_is_an_error_after_it(monkeypatch):
    from medclipsvd.tracking.cli_support import ModelNotLoggedError, log_model_after_training

    tracker = _Tracker()
    tracker.last_run_complete = False
    tracker.offline_error = RuntimeError("upload failed")
    tracker.offline_error.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(ModelNotLoggedError, match="kept in outbox.*medclipsvd sync"):
        log_model_after_training(tracker, "svd", log=lambda m: None)


def test_disk_error_is_found_through_wrapping_and_in_server_words():
    from medclipsvd.tracking.store import disk_error

    inner = OSError(errno.EROFS, "Read-only file system")
    try:
        try:
            raise inner
        except OSError:
            raise RuntimeError("could not save")  # noqa: B904 - implicit context, as libraries do
    except RuntimeError as exc:
        assert disk_error(exc) is inner
    assert disk_error(Exception("INTERNAL_ERROR: [Errno 28] No space left on device")) == "No space left on device"
    assert disk_error(OSError(errno.ECONNREFUSED, "refused")) is None and disk_error(None) is None
