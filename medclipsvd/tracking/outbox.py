"""The outbox: every tracked run is journalled on local disk while it runs, so losing the server mid-run loses
nothing. A run whose journal reached the server completely is deleted from the outbox when it ends; the rest
wait for `medclipsvd sync`.

Layout: <outbox>/<local id>/meta.json (run name, tags, parent, server, server run id), events.jsonl (one
event a line: params, metrics, tags, artifact, inputs, end), sent (how many events the server acknowledged) and
files/<seq>/ (copies of logged artefacts)."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

META = "meta.json"
EVENTS = "events.jsonl"
SENT = "sent"
FILES = "files"

# MLflow limits (a param value may hold 6000 characters; one log_batch: 1000 metrics, 100 params/tags)
MAX_PARAM_CHARS = 6000
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100  # also the limit for tags


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def now_ms() -> int:
    return int(time.time() * 1000)


def _atomic_write(path: Path, text: str) -> None:
    from medclipsvd.io import write_text

    write_text(path, text)  # unique temp name, fsync, rename; OutputError on a full/read-only disk


@dataclass
class RunJournal:
    """One run's folder in the outbox."""

    dir: Path
    meta: dict
    events: list[dict] = field(default_factory=list)
    sent: int = 0

    disk_error: str | None = None  # set when the journal could not be written (full disk): events stay in memory

    @classmethod
    def create(cls, outbox: Path, local_id: str, meta: dict) -> "RunJournal":
        from medclipsvd.io.atomic import OutputError, output_error

        d = outbox / local_id
        try:
            d.mkdir(parents=True, exist_ok=True)
            j = cls(d, {"local_id": local_id, **meta})
            j.save_meta()
            (d / EVENTS).touch()
            j.save_sent()
        except OSError as exc:  # before any work: a clear stop, not a traceback
            shutil.rmtree(d, ignore_errors=True)
            if isinstance(exc, OutputError):
                raise
            raise output_error(exc, d) from None
        return j

    @classmethod
    def open(cls, d: Path) -> "RunJournal":
        meta = json.loads((d / META).read_text())
        events = []
        events_file = d / EVENTS
        if events_file.exists():
            for line in events_file.read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:  # a line torn by a killed process: the rest never happened
                    break
        sent = int((d / SENT).read_text().strip() or 0) if (d / SENT).exists() else 0
        return cls(d, meta, events, min(sent, len(events)))

    @property
    def local_id(self) -> str:
        return self.meta["local_id"]

    @property
    def finished(self) -> bool:
        return any(e["t"] == "end" for e in self.events)

    def save_meta(self) -> None:
        _atomic_write(self.dir / META, json.dumps(self.meta, indent=2))

    def save_sent(self) -> None:
        try:
            _atomic_write(self.dir / SENT, str(self.sent))
        except OSError:
            if not self.events:  # at creation: report it
                raise
            # later (full disk): the server has the events; a stale count only means a re-send by `sync`

    def append(self, event: dict) -> dict:
        event = {"seq": len(self.events), "ts": now_ms(), **event}
        if event["t"] == "artifact":
            event["copy"] = self._copy(event["seq"], Path(event["src"]))
        try:
            with open(self.dir / EVENTS, "a") as fh:
                fh.write(json.dumps(event) + "\n")
        except OSError as exc:
            # The disk is full (or gone): keep the event in memory so the server still gets it (notably the
            # run's end status, FAILED); the journal on disk stops here, as a torn last line would.
            self.disk_error = self.disk_error or f"{self.dir / EVENTS}: {exc.strerror or exc}"
        self.events.append(event)
        return event

    def _copy(self, seq: int, src: Path) -> str | None:
        """Keep the artefact with the journal: the run folder may be gone by the time of `sync`."""
        dest = self.dir / FILES / str(seq) / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if src.is_dir():
                shutil.copytree(src, dest)
            else:
                shutil.copy2(src, dest)
        except OSError:
            return None
        return str(dest.relative_to(self.dir))

    def artifact_path(self, event: dict) -> Path:
        return self.dir / event["copy"] if event.get("copy") else Path(event["src"])

    def unsent(self) -> list[dict]:
        return self.events[self.sent:]

    def acknowledge(self, n: int) -> None:
        self.sent += n
        self.save_sent()

    def complete(self) -> bool:
        return self.finished and self.sent >= len(self.events)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def pending_runs(outbox: Path) -> list[RunJournal]:
    """Journals in the outbox, oldest first (so parents come before their nested runs)."""
    if not outbox.is_dir():
        return []
    runs = []
    for d in outbox.iterdir():
        if (d / META).is_file():
            try:
                runs.append(RunJournal.open(d))
            except (OSError, json.JSONDecodeError, ValueError):
                continue
    return sorted(runs, key=lambda j: (j.meta.get("created_ms", 0), j.local_id))


def clean_params(params: dict) -> dict[str, str]:
    return {str(k): str(v)[:MAX_PARAM_CHARS] for k, v in params.items()}


def clean_tags(tags: dict) -> dict[str, str]:
    return {str(k): str(v)[:MAX_PARAM_CHARS] for k, v in tags.items() if v is not None}


def send_events(client, run_id: str, events: list[dict], journal: RunJournal, warn) -> int:
    """Send `events` (in order) to run `run_id`; returns how many went through. Raises on a connection
    failure (the caller goes offline); drops, with a warning, an event the server rejects as invalid."""
    from mlflow.entities import Metric, Param, RunTag

    done = 0
    i = 0
    while i < len(events):
        e = events[i]
        kind = e["t"]
        if kind == "metrics":
            batch = []
            j = i
            while j < len(events) and events[j]["t"] == "metrics" and len(batch) < MAX_BATCH_METRICS:
                ev = events[j]
                batch += [Metric(k, float(v), ev["ts"], ev.get("step") or 0) for k, v in ev["data"].items()]
                j += 1
            _guard(lambda: client.log_batch(run_id, metrics=batch), warn, "metrics")
            done += j - i
            i = j
            continue
        if kind == "params":
            params = [Param(k, v) for k, v in e["data"].items()]
            for chunk in _chunks(params, MAX_BATCH_PARAMS):
                _guard(lambda: client.log_batch(run_id, params=chunk), warn, "parameters")
        elif kind == "tags":
            tags = [RunTag(k, v) for k, v in e["data"].items()]
            for chunk in _chunks(tags, MAX_BATCH_PARAMS):
                _guard(lambda: client.log_batch(run_id, tags=chunk), warn, "tags")
        elif kind == "artifact":
            path = journal.artifact_path(e)
            if not path.exists():
                warn(f"artefact {e['src']} is gone and was not kept in the outbox; skipped")
            elif path.is_dir():
                _guard(lambda: client.log_artifacts(run_id, str(path), e.get("artifact_path")), warn, "artefact")
            else:
                _guard(lambda: client.log_artifact(run_id, str(path), e.get("artifact_path")), warn, "artefact")
        elif kind == "inputs":
            from medclipsvd.tracking.datasets import to_dataset_input

            inputs = [to_dataset_input(r) for r in e["data"]]
            _guard(lambda: client.log_inputs(run_id, datasets=inputs), warn, "dataset inputs")
        elif kind == "end":
            _guard(lambda: client.set_terminated(run_id, e["status"], end_time=e["ts"]), warn, "run status")
        done += 1
        i += 1
    return done


def _guard(call, warn, what: str) -> None:
    """Run `call`; a request the server rejects (HTTP 4xx) is reported and skipped, anything else raises."""
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as exc:
        status = exc.get_http_status_code()
        if 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
            warn(f"the server rejected the {what} ({str(exc).splitlines()[0][:200]}); skipped")
            return
        raise
