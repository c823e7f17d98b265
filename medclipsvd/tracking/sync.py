"""`medclipsvd sync`: upload the runs waiting in the outbox.

A run that the server already knows (it was created before the server went away) is continued from the
first event the server did not acknowledge; a run the target server does not know (created offline, or
synced to another server) is created there and replayed from the start. Nested runs keep their parent.

What is uploaded, and where, is decided by the user, not by the journal: a journal is data that anyone able
to write the outbox folder can plant. So every journal is checked before anything is sent (`plan`): its
artefacts must be the copies the outbox kept under the journal's own folder (never a path it names
elsewhere), its events must have medclipsvd's shapes, and it goes to the configured tracking URI
(MLFLOW_TRACKING_URI, else the local store ./mlruns) unless the user names the target with `--to`; a journal
recorded for another server is refused, so a planted one cannot send files or credentials to a server of its
choosing. A refused journal stays in the outbox untouched; the others are uploaded; the command then fails."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medclipsvd.tracking import store
from medclipsvd.tracking.outbox import JournalError, RunJournal, check_events, pending_runs, send_events


@dataclass
class SyncResult:
    local_id: str
    name: str
    run_id: str | None
    events: int
    status: str  # "uploaded" | "pending" (dry run) | "running elsewhere" | "refused: ..."


@dataclass
class Plan:
    """What syncing one journal would do: the target, the events and the files (local copy, artefact path)."""

    journal: RunJournal
    uri: str
    events: list[dict]
    files: list[tuple[Path, str]] = field(default_factory=list)


class SyncRefused(store.TrackingError):
    """One or more journals were refused; the others were uploaded (`results`: every run's outcome)."""

    def __init__(self, message: str, results: list[SyncResult]):
        super().__init__(message)
        self.results = results


def _same(a: str, b: str) -> bool:
    return store.display_uri(a).rstrip("/") == store.display_uri(b).rstrip("/")


def _still_running(journal: RunJournal) -> bool:
    """The process that writes this journal is alive on this host (so it is not ours to upload yet)."""
    owner = journal.meta.get("pid")
    if journal.finished or not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _target_uri(journal: RunJournal, to: str | None) -> str:
    if to:
        if "***@" in to:
            raise store.TrackingError(f"--to {to}: the password is masked; pass the URI with the password, or set "
                                      "MLFLOW_TRACKING_PASSWORD and leave it out of the URI")
        return to
    uri = store.configured_uri()
    recorded = journal.meta.get("tracking_uri")
    if recorded and not _same(recorded, uri):
        raise JournalError(f"it was tracked to {recorded}, not to the configured tracking URI "
                           f"{store.display_uri(uri)} (MLFLOW_TRACKING_URI, else the local store ./mlruns); if you "
                           f"trust that server, upload it there with --to {recorded}")
    return uri


def plan(journal: RunJournal, to: str | None = None) -> Plan:
    """Check a journal and say what syncing it would send where; JournalError when it must not be synced."""
    check_events(journal)
    uri = _target_uri(journal, to)
    # a run the target does not know is replayed from the start: every event may be sent
    replay = not journal.meta.get("server_run_id") or (to and not _same(journal.meta.get("tracking_uri") or "", to))
    first = 0 if replay else journal.sent
    p = Plan(journal, uri, journal.events[first:])
    for i, e in enumerate(journal.events):  # all are checked: which ones are sent depends on the server
        if e["t"] == "artifact":
            kept = journal.kept_files(e)
            if kept is not None and i >= first:
                p.files += kept[1]
    return p


def _server_run(client, run_id: str | None):
    """The run on the server, or None when the server does not know it."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.get_http_status_code() in (400, 404) or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def _show_plan(p: Plan, log: Callable[[str], None]) -> None:
    j = p.journal
    name = j.meta.get("name") or j.local_id
    run = j.meta.get("server_run_id")
    where = (f"run {run} if it is there, else a new run" if run else "a new run") + \
        f" in experiment {j.meta.get('experiment') or store.DEFAULT_EXPERIMENT!r}"
    log(f"{name}: {len(p.events)} event(s), {len(p.files)} file(s) -> {store.display_uri(p.uri)}, {where}")
    for local, dest in p.files:
        log(f"  {local} -> {dest}")


def _refusal(journal: RunJournal, why: str) -> str:
    name = journal.meta.get("name") if isinstance(journal.meta.get("name"), str) else journal.local_id
    return (f"outbox journal {journal.dir} (run {name!r}) refused: {why}. Nothing of it was uploaded and it stays "
            "in the outbox; delete that folder if you did not write it")


def sync_outbox(outbox: str | os.PathLike | None = None, tracking_uri: str | None = None,
                log: Callable[[str], None] = print, dry_run: bool = False) -> list[SyncResult]:
    """Upload every run in the outbox (`tracking_uri`: the explicit target, `--to`); returns one SyncResult
    per run. Raises TrackingError if a target server does not answer (nothing is changed locally then), and
    SyncRefused, after uploading the others, if any journal was refused (see the module docstring)."""
    store.configure_http()
    box = store.outbox_dir(outbox)
    unreadable: list[tuple[Path, str]] = []
    journals = pending_runs(box, unreadable)
    results: list[SyncResult] = []
    refused = [f"outbox folder {d} is not a journal medclipsvd can read ({why}); nothing of it was uploaded and it "
               "stays in the outbox; delete that folder if you did not write it" for d, why in unreadable]
    if not journals and not refused:
        log(f"nothing to upload: the outbox {box} is empty")
        return results
    plans: list[Plan] = []
    for journal in journals:
        name = journal.meta.get("name") or journal.local_id
        if _still_running(journal):
            results.append(SyncResult(journal.local_id, name, None, 0, "running elsewhere"))
            log(f"{name}: still being written by process {journal.meta['pid']['pid']}; left for later")
            continue
        try:
            plans.append(plan(journal, tracking_uri))
        except JournalError as exc:
            refused.append(_refusal(journal, str(exc)))
            results.append(SyncResult(journal.local_id, name, None, 0, f"refused: {exc}"))
    if dry_run:
        for p in plans:
            _show_plan(p, log)
            results.append(SyncResult(p.journal.local_id, p.journal.meta.get("name") or p.journal.local_id,
                                      p.journal.meta.get("server_run_id"), len(p.events), "pending"))
    else:
        results += _upload(plans, log, refused)
    if refused:
        for line in refused[1:]:
            log(f"also {line}")
        more = f" ({len(refused) - 1} more journal(s) refused, listed above)" if len(refused) > 1 else ""
        raise SyncRefused(refused[0] + more, results)
    return results


def _upload(plans: list[Plan], log: Callable[[str], None], refused: list[str]) -> list[SyncResult]:
    from mlflow import MlflowClient

    from medclipsvd.tracking.mlflow_tracker import ensure_experiment

    results = []
    server_ids: dict[str, str] = {}   # local id -> run id on the target, for nested runs
    clients: dict[str, object] = {}
    for p in plans:
        journal, uri = p.journal, p.uri
        name = journal.meta.get("name") or journal.local_id
        if uri not in clients:
            store.probe(uri)
            clients[uri] = MlflowClient(uri)
        client = clients[uri]
        run_id = journal.meta.get("server_run_id")
        existing = _server_run(client, run_id)
        if existing is not None and (existing.info.status != "RUNNING" or existing.info.lifecycle_stage != "active"):
            # a journal continues only a run the server lost while it was open: one that has ended (or was
            # deleted) is not reopened and written into by whatever a journal on disk says
            why = (f"it would continue run {run_id} at {store.display_uri(uri)}, which has "
                   f"{'been deleted' if existing.info.lifecycle_stage != 'active' else 'ended'} "
                   f"({existing.info.status}); a journal only completes a run that is still open there")
            refused.append(_refusal(journal, why))
            results.append(SyncResult(journal.local_id, name, None, 0, f"refused: {why}"))
            continue
        if existing is None:
            tags = dict(journal.meta.get("tags", {}))
            parent = journal.meta.get("parent_local_id")
            if parent and parent in server_ids:
                tags["mlflow.parentRunId"] = server_ids[parent]
            exp_id = ensure_experiment(client, uri, journal.meta.get("experiment") or store.DEFAULT_EXPERIMENT)
            created = journal.meta.get("created_ms")
            run = client.create_run(exp_id, start_time=created if isinstance(created, int) else None, tags=tags,
                                    run_name=journal.meta.get("name"))
            run_id = run.info.run_id
            journal.meta["server_run_id"] = run_id
            journal.meta["tracking_uri"] = store.display_uri(uri)
            journal.save_meta()
            journal.sent = 0  # a new run on this server: replay everything
            journal.save_sent()
        server_ids[journal.local_id] = run_id
        warnings: list[str] = []
        sent = send_events(client, run_id, journal.unsent(), journal, warnings.append, kept_only=True)
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
