"""`medclipsvd sync`: upload the runs waiting in the outbox.

A run that the server already knows (it was created before the server went away) is continued from the
first event the server did not acknowledge; a run the target server does not know (created offline, or
synced to another server) is created there and replayed from the start. Nested runs keep their parent."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medclipsvd.tracking import store
from medclipsvd.tracking.outbox import RunJournal, pending_runs, send_events


@dataclass
class SyncResult:
    local_id: str
    name: str
    run_id: str | None
    events: int
    status: str  # "uploaded" | "running elsewhere" | "failed: ..."


def _still_running(journal: RunJournal) -> bool:
    """The process that writes this journal is alive on this host (so it is not ours to upload yet)."""
    owner = journal.meta.get("pid") or {}
    if journal.finished or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _target_uri(journal: RunJournal, override: str | None) -> str:
    uri = override or os.environ.get("MLFLOW_TRACKING_URI") or journal.meta.get("tracking_uri")
    if not uri:
        uri = store.default_tracking_uri()
    if "***@" in uri:
        raise store.TrackingError(f"run {journal.meta.get('name')!r} in {journal.dir} was tracked to {uri}, whose "
                                  "password is not stored; pass --tracking-uri with the full URI (or set "
                                  "MLFLOW_TRACKING_URI)")
    return uri


def _run_exists(client, run_id: str | None, journal: RunJournal | None = None) -> bool:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return False
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.get_http_status_code() == 404 or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return False
        raise
    from medclipsvd.tracking.registry_checks import check_run_not_deleted

    check_run_not_deleted(run, client.tracking_uri, "synced into",
                          otherwise=f"move {journal.dir if journal else 'its journal'} out of the outbox to drop it")
    return True


def sync_outbox(outbox: str | os.PathLike | None = None, tracking_uri: str | None = None,
                log: Callable[[str], None] = print, dry_run: bool = False) -> list[SyncResult]:
    """Upload every run in the outbox; returns one SyncResult per run. Raises TrackingError if a target
    server does not answer (nothing is changed locally then)."""
    from mlflow import MlflowClient

    from medclipsvd.tracking.mlflow_tracker import ensure_experiment

    store.configure_http()
    box = store.outbox_dir(outbox)
    journals = pending_runs(box)
    results: list[SyncResult] = []
    if not journals:
        log(f"nothing to upload: the outbox {box} is empty")
        return results
    server_ids: dict[str, str] = {}   # local id -> run id on the target, for nested runs
    clients: dict[str, object] = {}
    for journal in journals:
        name = journal.meta.get("name", journal.local_id)
        if _still_running(journal):
            results.append(SyncResult(journal.local_id, name, None, 0, "running elsewhere"))
            log(f"{name}: still being written by process {journal.meta['pid']['pid']}; left for later")
            continue
        uri = _target_uri(journal, tracking_uri)
        if dry_run:
            results.append(SyncResult(journal.local_id, name, journal.meta.get("server_run_id"),
                                      len(journal.unsent()), "pending"))
            log(f"{name}: {len(journal.unsent())} event(s) to upload to {store.display_uri(uri)}")
            continue
        if uri not in clients:
            store.probe(uri)
            clients[uri] = MlflowClient(uri)
        client = clients[uri]
        run_id = journal.meta.get("server_run_id")
        if not _run_exists(client, run_id, journal):
            tags = dict(journal.meta.get("tags", {}))
            parent = journal.meta.get("parent_local_id")
            if parent and parent in server_ids:
                tags["mlflow.parentRunId"] = server_ids[parent]
            exp_id = ensure_experiment(client, uri, journal.meta.get("experiment") or store.DEFAULT_EXPERIMENT)
            run = client.create_run(exp_id, start_time=journal.meta.get("created_ms"), tags=tags,
                                    run_name=journal.meta.get("name"))
            run_id = run.info.run_id
            journal.meta["server_run_id"] = run_id
            journal.meta["tracking_uri"] = store.display_uri(uri)
            journal.save_meta()
            journal.sent = 0  # a new run on this server: replay everything
            journal.save_sent()
        server_ids[journal.local_id] = run_id
        pending = journal.unsent()
        warnings: list[str] = []
        sent = send_events(client, run_id, pending, journal, warnings.append)
        journal.acknowledge(sent)
        if not journal.finished:
            # the process died before closing the run: record that rather than leave it "running" forever
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag("medclipsvd.sync_note",
                                                  "the training process ended before closing this run")])
            client.set_terminated(run_id, "FAILED")
        for w in warnings:
            log(f"{name}: {w}")
        results.append(SyncResult(journal.local_id, name, run_id, sent, "uploaded"))
        log(f"{name}: uploaded {sent} event(s) to run {run_id} at {store.display_uri(uri)}")
        journal.remove()
    return results


def describe_outbox(outbox: str | os.PathLike | None = None) -> list[dict]:
    box = store.outbox_dir(outbox)
    return [{"local_id": j.local_id, "name": j.meta.get("name"), "dir": str(j.dir),
             "unsent_events": len(j.unsent()), "server_run_id": j.meta.get("server_run_id"),
             "finished": j.finished} for j in pending_runs(Path(box))]
