"""The outbox: every tracked run is journalled on local disk while it runs, so losing the server mid-run loses
nothing. A run whose journal reached the server completely is deleted from the outbox when it ends; the rest
wait for `medclipsvd sync`.

Layout: <outbox>/<local id>/meta.json (run name, tags, parent, server, server run id), events.jsonl (one
event a line: params, metrics, tags, artifact, inputs, end), sent (how many events the server acknowledged) and
files/<seq>/ (copies of logged artefacts, made when they are logged: the run's output as it was then).

A journal on disk is data, and data can be wrong or hostile: `medclipsvd sync` uploads only the copies kept
under the journal's own files/ folder (`RunJournal.kept_files`), never the original path an event names, and
refuses a journal whose artefact events point anywhere else (an absolute path, `..`, a symlink out, no copy)
or whose events are malformed (`check_events`). The process that writes a journal sends its own events while
it runs and may read the original file when its copy failed (`artifact_path`)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from medclipsvd.errors import MedClipSVDError

META = "meta.json"
EVENTS = "events.jsonl"
SENT = "sent"
FILES = "files"

# MLflow limits (a param value may hold 6000 characters; one log_batch: 1000 metrics, 100 params/tags)
MAX_PARAM_CHARS = 6000
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100  # also the limit for tags


EVENT_KINDS = ("params", "metrics", "tags", "artifact", "inputs", "end")
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")


class JournalError(MedClipSVDError):
    """A journal in the outbox that `sync` must not upload as it stands (the message says why and what to do)."""


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
        """Read a journal; ValueError when it is not one (meta.json not an object with a local id, an event
        that is not an object with a kind)."""
        from medclipsvd.io.safeload import load_json

        meta = load_json(d / META)  # bounded size and depth: FileFormatError, a ValueError, names the file
        if not isinstance(meta, dict) or not isinstance(meta.get("local_id"), str):
            raise ValueError(f"{d / META} is not a journal's meta.json (an object with a local_id)")
        events = []
        events_file = d / EVENTS
        if events_file.exists():
            for n, line in enumerate(events_file.read_text().splitlines(), 1):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a killed process: the rest never happened
                    break
                except RecursionError:  # no logger writes that: a planted or damaged file
                    raise ValueError(f"{events_file}, line {n}: nested too deeply to be an event") from None
                if not isinstance(event, dict) or not isinstance(event.get("t"), str):
                    raise ValueError(f"{events_file}, line {n}: not an event (an object with a kind 't')")
                events.append(event)
        sent = int((d / SENT).read_text().strip() or 0) if (d / SENT).exists() else 0
        return cls(d, meta, events, max(0, min(sent, len(events))))

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
        """For the process that logged the event: its copy, else the original (the copy failed)."""
        return self.dir / event["copy"] if event.get("copy") else Path(event["src"])

    def kept_files(self, event: dict) -> tuple[Path, list[tuple[Path, str]]] | None:
        """For `sync`: the journal's own copy of an artefact event's file or folder and the files in it, each
        with its artefact path on the run; None when the copy is gone (nothing to upload). Raises
        JournalError when the event names anything outside <journal>/files/ (absolute path, `..`, a symlink
        leading out, no copy at all) or anything that is not a plain file."""
        dest = event.get("artifact_path")
        if dest not in (None, "") and (not isinstance(dest, str) or not _plain_relative(dest)):  # "": the root
            raise JournalError(f"event {event.get('seq')} would store its file under the artefact path {dest!r}, "
                               "which is not a plain relative path")
        copy = event.get("copy")
        if not copy:
            raise JournalError(f"its artefact {event.get('src')!r} (event {event.get('seq')}) was not kept in the "
                               "outbox when it was logged (the copy failed), and sync uploads only the copies the "
                               "outbox kept")
        own = os.path.join(os.path.realpath(self.dir), FILES)
        path = self.dir / str(copy)
        if not (isinstance(copy, str) and _plain_relative(copy) and PurePosixPath(copy).parts[0] == FILES
                and _inside(os.path.realpath(path), own)):
            raise JournalError(f"event {event.get('seq')} names {copy!r}, outside the copies the outbox kept for "
                               f"this run ({self.dir / FILES})")
        if not os.path.lexists(path):
            return None
        found = [(path, "")] if not path.is_dir() else [
            (Path(dirpath) / name, os.path.relpath(os.path.join(dirpath, name), path))
            for dirpath, dirnames, filenames in os.walk(path) for name in sorted(dirnames) + sorted(filenames)]
        files = []
        for f, rel in found:
            real = os.path.realpath(f)
            if not _inside(real, own):
                raise JournalError(f"{f} (event {event.get('seq')}) is a symlink leading outside the copies the "
                                   f"outbox kept for this run ({self.dir / FILES})")
            try:
                mode = os.stat(real).st_mode
            except OSError as exc:
                raise JournalError(f"{f} (event {event.get('seq')}) cannot be read ({exc.strerror})") from None
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise JournalError(f"{f} (event {event.get('seq')}) is not a plain file")
            name = rel.replace(os.sep, "/") if rel else path.name
            files.append((f, f"{dest.rstrip('/')}/{name}" if dest else name))
        return path, files

    def unsent(self) -> list[dict]:
        return self.events[self.sent:]

    def acknowledge(self, n: int) -> None:
        self.sent += n
        self.save_sent()

    def complete(self) -> bool:
        return self.finished and self.sent >= len(self.events)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _plain_relative(path: str) -> bool:
    """A relative POSIX path without `..`, empty parts, backslashes or drive letters."""
    p = PurePosixPath(path)
    return (bool(path) and not p.is_absolute() and "\\" not in path and ":" not in path
            and all(part not in ("", ".", "..") for part in path.rstrip("/").split("/")))


def pending_runs(outbox: Path, unreadable: list[tuple[Path, str]] | None = None) -> list[RunJournal]:
    """Journals in the outbox, oldest first (so parents come before their nested runs). Folders with a
    meta.json that cannot be read as a journal are left out (and listed in `unreadable` with why)."""
    if not outbox.is_dir():
        return []
    runs = []
    for d in outbox.iterdir():
        if (d / META).is_file():
            try:
                runs.append(RunJournal.open(d))
            except (OSError, json.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
                if unreadable is not None:
                    unreadable.append((d, str(exc)))
                continue
    return sorted(runs, key=lambda j: (_number(j.meta.get("created_ms")), j.local_id))


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def check_events(journal: RunJournal) -> None:
    """Refuse (JournalError) a journal whose meta or events do not have the shapes medclipsvd writes, before
    anything of it is sent (a damaged or planted journal must fail here, not halfway through an upload)."""
    meta = journal.meta

    def bad(what: str) -> JournalError:
        return JournalError(f"{what}; it was not written by medclipsvd, or it is damaged")

    for key in ("name", "experiment", "parent_local_id", "server_run_id", "tracking_uri"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(f"meta.json field {key!r} is not a string")
    if not _str_map(meta.get("tags", {})):
        raise bad("meta.json field 'tags' is not a mapping of strings")
    for e in journal.events:
        kind, data = e.get("t"), e.get("data")
        where = f"event {e.get('seq')} ({kind!r})"
        if kind not in EVENT_KINDS:
            raise bad(f"{where} is of an unknown kind")
        if not isinstance(e.get("ts", 0), int) or isinstance(e.get("ts", 0), bool):
            raise bad(f"{where} has no integer time stamp")
        if kind in ("params", "tags") and not _str_map(data):
            raise bad(f"{where} does not hold a mapping of strings")
        if kind == "metrics" and not (isinstance(data, dict) and all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in data.items())
                and (e.get("step") is None or isinstance(e.get("step"), int))):
            raise bad(f"{where} does not hold a mapping of numbers")
        if kind == "inputs" and not (isinstance(data, list) and all(
                isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("name", "digest", "source_type",
                                                                                 "source", "context"))
                for r in data)):
            raise bad(f"{where} does not hold dataset records")
        if kind == "end" and e.get("status") not in RUN_STATUSES:
            raise bad(f"{where} has no run status")


def _str_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def clean_params(params: dict) -> dict[str, str]:
    return {str(k): str(v)[:MAX_PARAM_CHARS] for k, v in params.items()}


def clean_tags(tags: dict) -> dict[str, str]:
    return {str(k): str(v)[:MAX_PARAM_CHARS] for k, v in tags.items() if v is not None}


def send_events(client, run_id: str, events: list[dict], journal: RunJournal, warn, kept_only: bool = False) -> int:
    """Send `events` (in order) to run `run_id`; returns how many went through. Raises on a connection
    failure (the caller goes offline); drops, with a warning, an event the server rejects as invalid.
    `kept_only` (sync): artefacts come only from the journal's own copies (see RunJournal.kept_files)."""
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
            kept = journal.kept_files(e) if kept_only else None
            path = kept[0] if kept else journal.artifact_path(e)
            if (kept_only and kept is None) or not path.exists():
                warn(f"artefact {e['src']} is gone and was not kept in the outbox; skipped")
            elif path.is_dir():
                _guard(lambda: client.log_artifacts(run_id, str(path), e.get("artifact_path") or None), warn, "artefact")
            else:
                _guard(lambda: client.log_artifact(run_id, str(path), e.get("artifact_path") or None), warn, "artefact")
        elif kind == "inputs":
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


def to_dataset_input(record: dict):
    """The MLflow entity for a dataset record (medclipsvd.engine.dataset_record; imports MLflow)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    ds = Dataset(name=record["name"], digest=record["digest"], source_type=record["source_type"],
                 source=record["source"], schema=record.get("schema"), profile=record.get("profile"))
    return DatasetInput(ds, tags=[InputTag("mlflow.data.context", record["context"])])
