"""The outbox journal and the sender, against a recording fake client (no server): ordering, batching within
MLflow's limits, acknowledgement, torn journal lines, rejected requests skipped, connection errors raised."""
from __future__ import annotations

import pytest

from medclipsvd.tracking.outbox import (MAX_BATCH_METRICS, MAX_BATCH_PARAMS, RunJournal, clean_params,
                                        pending_runs, send_events)


class FakeClient:
    def __init__(self, fail_on: str | None = None, reject_on: str | None = None):
        self.calls, self.fail_on, self.reject_on = [], fail_on, reject_on

    def _call(self, name, **kw):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        if name == self.fail_on:
            raise MlflowException("API request failed: Max retries exceeded (connection refused)")
        if name == self.reject_on:
            raise MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE)
        self.calls.append((name, kw))

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        kind = "metrics" if metrics else "params" if params else "tags"
        self._call(f"log_batch:{kind}", n=len(metrics or params or tags))

    def log_artifact(self, run_id, path, artifact_path=None):
        self._call("log_artifact", path=path)

    def log_artifacts(self, run_id, path, artifact_path=None):
        self._call("log_artifacts", path=path)

    def set_terminated(self, run_id, status, end_time=None):
        self._call("set_terminated", status=status)


def _journal(tmp_path, n_metrics=0, n_params=0):
    j = RunJournal.create(tmp_path / "box", "abc", {"name": "r", "created_ms": 1})
    if n_params:
        j.append({"t": "params", "data": clean_params({f"p{i}": i for i in range(n_params)})})
    for step in range(n_metrics):
        j.append({"t": "metrics", "data": {"train/loss": 1.0 / (step + 1)}, "step": step})
    return j


def test_batches_respect_mlflow_limits(tmp_path):
    j = _journal(tmp_path, n_metrics=MAX_BATCH_METRICS + 5, n_params=MAX_BATCH_PARAMS + 1)
    art = tmp_path / "results.json"
    art.write_text("{}")
    j.append({"t": "artifact", "src": str(art), "artifact_path": None})
    j.append({"t": "end", "status": "FINISHED"})
    client = FakeClient()
    sent = send_events(client, "run", j.unsent(), j, warn=pytest.fail)
    assert sent == len(j.events)
    assert [c[0] for c in client.calls] == ["log_batch:params", "log_batch:params", "log_batch:metrics",
                                            "log_batch:metrics", "log_artifact", "set_terminated"]
    assert [c[1]["n"] for c in client.calls[:4]] == [MAX_BATCH_PARAMS, 1, MAX_BATCH_METRICS, 5]
    assert client.calls[4][1]["path"].startswith(str(j.dir))  # the outbox copy is uploaded


def test_connection_failure_raises_and_acknowledgement_survives_reopen(tmp_path):
    j = _journal(tmp_path, n_metrics=3)
    j.append({"t": "end", "status": "FINISHED"})
    with pytest.raises(Exception, match="Max retries"):
        send_events(FakeClient(fail_on="set_terminated"), "run", j.unsent(), j, warn=pytest.fail)
    j.acknowledge(3)
    again = RunJournal.open(j.dir)
    assert again.sent == 3 and [e["t"] for e in again.unsent()] == ["end"] and not again.complete()
    assert send_events(FakeClient(), "run", again.unsent(), again, warn=pytest.fail) == 1


def test_rejected_event_is_skipped_with_warning(tmp_path):
    j = _journal(tmp_path, n_params=2)
    warnings = []
    assert send_events(FakeClient(reject_on="log_batch:params"), "run", j.unsent(), j, warnings.append) == 1
    assert "rejected the parameters" in warnings[0]


def test_torn_last_line_is_ignored(tmp_path):
    j = _journal(tmp_path, n_metrics=2)
    with open(j.dir / "events.jsonl", "a") as fh:
        fh.write('{"seq": 2, "t": "metr')  # a process killed mid-write
    [reopened] = pending_runs(tmp_path / "box")
    assert len(reopened.events) == 2 and not reopened.finished


def test_long_param_values_are_cut_to_mlflow_limit():
    assert len(clean_params({"x": "a" * 10_000})["x"]) == 6000


def test_kept_files_are_the_outbox_copies_with_their_artifact_paths(tmp_path):
    from medclipsvd.tracking.outbox import check_events

    j = _journal(tmp_path, n_params=1)
    run = tmp_path / "run"
    (run / "adapter" / "sub").mkdir(parents=True)
    (run / "results.json").write_text("{}")
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "sub" / "x.txt").write_text("x")
    j.append({"t": "artifact", "src": str(run / "results.json"), "artifact_path": None})
    j.append({"t": "artifact", "src": str(run / "adapter"), "artifact_path": "adapter"})
    import shutil

    shutil.rmtree(run)  # the run folder may be gone by the time of `sync`: the copies are what counts
    reopened = RunJournal.open(j.dir)
    check_events(reopened)
    (_, f1), (_, f2) = (reopened.kept_files(e) for e in reopened.events if e["t"] == "artifact")
    assert [(p.relative_to(j.dir).as_posix(), dest) for p, dest in f1 + f2] == [
        ("files/1/results.json", "results.json"),
        ("files/2/adapter/adapter_config.json", "adapter/adapter_config.json"),
        ("files/2/adapter/sub/x.txt", "adapter/sub/x.txt")]


@pytest.mark.parametrize("case", ["no-copy", "absolute", "dotdot", "symlink-out", "fifo", "bad-artifact-path"])
def test_kept_files_refuses_anything_outside_the_journal(tmp_path, case):
    import os

    from medclipsvd.tracking.outbox import JournalError

    j = _journal(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    kept = j.dir / "files" / "0"
    kept.mkdir(parents=True)
    event = {"seq": 0, "t": "artifact", "src": str(secret), "artifact_path": None, "copy": "files/0/r.json"}
    if case == "no-copy":
        event["copy"] = None
    elif case == "absolute":
        event["copy"] = str(secret)
    elif case == "dotdot":
        event["copy"] = "files/0/../../../secret.txt"
    elif case == "symlink-out":
        os.symlink(secret, kept / "r.json")
    elif case == "fifo":
        os.mkfifo(kept / "r.json")  # reading it would hang the upload
    else:
        (kept / "r.json").write_text("{}")
        event["artifact_path"] = "/abs/elsewhere"
    with pytest.raises(JournalError):
        j.kept_files(event)


def test_malformed_journals_are_refused_or_reported(tmp_path):
    import json

    from medclipsvd.tracking.outbox import JournalError, check_events

    j = _journal(tmp_path, n_metrics=1)
    j.append({"t": "end", "status": "rm -rf"})
    with pytest.raises(JournalError, match="run status"):
        check_events(RunJournal.open(j.dir))
    other = tmp_path / "box" / "not-a-journal"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps(["a", "list"]))
    unreadable = []
    assert [r.local_id for r in pending_runs(tmp_path / "box", unreadable)] == ["abc"]
    assert [d.name for d, _ in unreadable] == ["not-a-journal"]
