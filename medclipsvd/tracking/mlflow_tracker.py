"""`MlflowTracker`: the Tracker interface on MLflow, resilient to a server that goes away.

Every event is journalled in the outbox first, then sent. If the server stops answering, the tracker goes
offline for the rest of the process (no more waiting on timeouts), training carries on, and when the run ends
the user is told that the results are on disk and that `medclipsvd sync` uploads them. Runs opened while
another is open are nested under it (benchmark parent -> per-dataset/K/seed runs)."""
from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import medclipsvd
from medclipsvd.tracking import store
from medclipsvd.tracking.outbox import RunJournal, clean_params, clean_tags, now_ms, send_events

# Per-step metrics are sent in batches: at most this many seconds or events apart.
FLUSH_SECONDS = 10.0
FLUSH_EVENTS = 200
# System metrics (system/cpu_utilization_percentage, memory, disk, network, GPU) are sampled this often.
SYSTEM_METRICS_SECONDS = 5.0
# Params that also become tags, so runs can be filtered by them in the MLflow UI.
PARAM_TAGS = {"shots": "K", "seed": "seed", "pipeline": "pipeline", "dataset": "dataset",
              "protocol": "protocol", "backbone": "backbone", "method": "method"}


def _say(message: str) -> None:
    print(f"medclipsvd tracking: {message}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the medclipsvd source tree, when it is a git checkout (editable installs)."""
    root = Path(medclipsvd.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


class _ActiveRun:
    def __init__(self, journal: RunJournal, server_id: str | None):
        self.journal = journal
        self.server_id = server_id
        self.last_flush = time.monotonic()
        self.monitor = None  # SystemMetricsMonitor of a top-level run
        self.children = 0    # nested runs opened under this one


def _failed_before_work(active: _ActiveRun, exc: BaseException) -> bool:
    """A user error (bad data root, options) raised before any metric was logged or nested run opened: nothing
    ran, so the run would only be an empty FAILED entry in the user's experiment."""
    from medclipsvd.errors import MedClipSVDError

    return (isinstance(exc, MedClipSVDError) and active.children == 0
            and not any(e["t"] == "metrics" for e in active.journal.events))


def _system_metrics_class():
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class SystemMetrics(SystemMetricsMonitor):
        """MLflow's monitor drops the samples of an unfinished interval when it stops, so a run shorter than
        one interval would get no system metrics at all; this one publishes what it sampled."""

        def finish(self):
            if self._process is None:
                return
            self._shutdown_event.set()
            self._process.join()
            self._process = None
            try:
                metrics = self.aggregate_metrics()
                if metrics:
                    self.publish_metrics(metrics)
                self.mlflow_logger.flush()
            except Exception as exc:  # the server went away: system metrics are not worth a failure
                _say(f"system metrics not sent ({type(exc).__name__})")

    return SystemMetrics


class MlflowTracker:
    """Tracker that logs to MLflow at `tracking_uri` (already resolved and probed, see make_tracker)."""

    def __init__(self, tracking_uri: str, experiment: str = store.DEFAULT_EXPERIMENT,
                 outbox: str | Path | None = None, system_metrics: bool = True):
        from mlflow import MlflowClient

        store.configure_http()
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.outbox = store.outbox_dir(outbox)
        self.client = MlflowClient(tracking_uri)
        self.online = True
        self.offline_error: BaseException | None = None  # why the tracker went offline (a full disk, a lost server)
        self.last_run_id: str | None = None      # server id of the last run that ended
        self.last_run_complete = True            # did it reach the server completely?
        self._stack: list[_ActiveRun] = []
        self.default_tags: dict[str, Any] = {}  # added to every run (e.g. the pipeline, set by `train`)
        self._experiment_id: str | None = None
        self.system_metrics = system_metrics     # CPU/memory/disk/network (+ GPU) as system/* metrics

    # Tracker interface ---------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        return self._stack[-1].server_id if self._stack else None

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, Any] | None = None, nested: bool = False) -> Iterator[str | None]:
        parent = self._stack[-1] if self._stack else None
        all_tags = {"medclipsvd.version": medclipsvd.__version__, "mlflow.source.name": "medclipsvd",
                    "mlflow.source.git.commit": git_commit(), **self.default_tags, **dict(tags or {})}
        if parent is not None and parent.server_id:
            all_tags["mlflow.parentRunId"] = parent.server_id
        all_tags = clean_tags(all_tags)
        local_id = uuid.uuid4().hex
        journal = RunJournal.create(self.outbox, local_id, {
            "name": name, "tags": all_tags, "tracking_uri": store.display_uri(self.tracking_uri),
            "experiment": self.experiment, "parent_local_id": parent.journal.local_id if parent else None,
            "created_ms": now_ms(), "pid": _pid(), "server_run_id": None})
        active = _ActiveRun(journal, self._create_run(name, all_tags))
        journal.meta["server_run_id"] = active.server_id
        journal.save_meta()
        if parent is not None:
            parent.children += 1
        if parent is None and self.system_metrics:
            active.monitor = self._start_monitor(active.server_id)
        self._stack.append(active)
        status = "FINISHED"
        try:
            yield active.server_id
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException as exc:
            status = "DISCARD" if _failed_before_work(active, exc) else "FAILED"
            raise
        finally:
            self._stop_monitor(active)
            self._stack.pop()
            if status == "DISCARD":
                self._discard(active)
            else:
                self._end(active, name, status)

    def _end(self, active: _ActiveRun, name: str, status: str) -> None:
        journal = active.journal
        self._record(active, {"t": "end", "status": status}, force=True)
        self.last_run_id = active.server_id
        self.last_run_complete = journal.complete()
        if self.last_run_complete:
            journal.remove()
            if not self._stack:  # top-level runs: the ID is what `medclipsvd register --run-id` needs
                _say(f"MLflow run {active.server_id} ({name}) in {store.display_uri(self.tracking_uri)}, "
                     f"experiment {self.experiment!r}")
        else:
            shown = store.display_uri(self.tracking_uri)
            # sync uploads to the configured store unless told otherwise (a journal does not choose its server)
            same = self.tracking_uri == store.configured_uri()
            command = "medclipsvd sync" if same else f"medclipsvd sync --to {shown}"
            _say(f"run {name!r} is kept on local disk in {journal.dir} because the MLflow server {shown} could "
                 f"not be reached. Upload it when the server is back with: {command}"
                 f"{' (with the password in the URI)' if '***@' in shown else ''}.")

    def _discard(self, active: _ActiveRun) -> None:
        """Remove a run that failed before any work (see _failed_before_work) from the store and the outbox."""
        self.last_run_id, self.last_run_complete = None, False
        if active.server_id is not None and self.online:
            try:
                self.client.set_terminated(active.server_id, "FAILED")
                self.client.delete_run(active.server_id)
            except Exception:  # the server went away: keep the journal, so nothing is lost silently
                self._record(active, {"t": "end", "status": "FAILED"}, force=True)
                return
        active.journal.remove()

    def _start_monitor(self, run_id: str | None):
        """MLflow's system-metrics sampler for a top-level run (logs straight to the server, not the outbox)."""
        if run_id is None or not self.online:
            return None
        try:
            monitor = _system_metrics_class()(run_id, sampling_interval=SYSTEM_METRICS_SECONDS,
                                     tracking_uri=self.tracking_uri)
            monitor.start()
            return monitor
        except Exception as exc:  # psutil missing or an unsupported platform: tracking goes on without
            _say(f"system metrics are not recorded ({type(exc).__name__}: {str(exc)[:120]})")
            return None

    @staticmethod
    def _stop_monitor(active: _ActiveRun) -> None:
        if active.monitor is not None:
            active.monitor.finish()
            active.monitor = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        active = self._active()
        if active is None:
            return
        self._record(active, {"t": "params", "data": clean_params(dict(params))}, force=True)
        derived = {tag: params[key] for key, tag in PARAM_TAGS.items() if key in params}
        if derived:
            self.set_tags(derived)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        active = self._active()
        if active is None:
            return
        data = {str(k): float(v) for k, v in metrics.items()}
        self._record(active, {"t": "metrics", "data": data, "step": step}, force=False)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        active = self._active()
        if active is None:
            return
        self._record(active, {"t": "artifact", "src": str(Path(path).resolve()), "artifact_path": artifact_path},
                     force=True)

    def log_dataset(self, record: Mapping[str, Any]) -> None:
        """A dataset input of the run (see medclipsvd.engine.dataset_record.dataset_record: no file names)."""
        active = self._active()
        if active is None:
            return
        self._record(active, {"t": "inputs", "data": [dict(record)]}, force=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        active = self._active()
        if active is None:
            return
        self._record(active, {"t": "tags", "data": clean_tags(dict(tags))}, force=True)

    # internals -----------------------------------------------------------------------------------
    def _active(self) -> _ActiveRun | None:
        if not self._stack:
            _say("a log call outside a run was ignored")
            return None
        return self._stack[-1]

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.client, self.tracking_uri, self.experiment)
        return self._experiment_id

    def _create_run(self, name: str, tags: dict) -> str | None:
        if not self.online:
            return None
        try:
            run = self.client.create_run(self.experiment_id(), run_name=name, tags=tags)
            return run.info.run_id
        except Exception as exc:
            self._go_offline(exc)
            return None

    def _record(self, active: _ActiveRun, event: dict, force: bool) -> None:
        active.journal.append(event)
        due = (len(active.journal.unsent()) >= FLUSH_EVENTS
               or time.monotonic() - active.last_flush >= FLUSH_SECONDS)
        if force or due:
            self._flush(active)

    def _flush(self, active: _ActiveRun) -> None:
        active.last_flush = time.monotonic()
        if not self.online or active.server_id is None:
            return
        journal = active.journal
        pending = journal.unsent()
        if not pending:
            return
        try:
            sent = send_events(self.client, active.server_id, pending, journal, _say)
        except Exception as exc:
            self._go_offline(exc)
            return
        journal.acknowledge(sent)

    def _go_offline(self, exc: BaseException) -> None:
        if self.online:
            self.online = False
            self.offline_error = exc
            if store.disk_error(exc) is not None:  # not a lost server: the store's disk is full or read-only
                _say(f"the MLflow store {store.display_uri(self.tracking_uri)} cannot take more files "
                     f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}). Training continues; "
                     f"tracking is journalled in {self.outbox} for `medclipsvd sync` once there is space.")
                return
            _say(f"lost the MLflow server {store.display_uri(self.tracking_uri)} "
                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}). Training "
                 f"continues; tracking is journalled in {self.outbox} for `medclipsvd sync`.")


def ensure_experiment(client, tracking_uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=store.default_artifact_location(tracking_uri, name))
    except MlflowException:  # created meanwhile by a parallel shard
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _pid() -> dict:
    import os
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname()}
