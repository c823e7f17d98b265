"""Where a benchmark's runs execute: one after another in this process (`local`), or as Ray tasks on a
cluster (`ray`: `pip install 'medclipsvd[ray]'`), several σ runs packed on one GPU with fractional GPUs.

Both executors get the same list of pending runs (those without results, in this shard) and leave the same
files behind: each run writes <output>/runs/.../results.json, and the tables are aggregated from those files
afterwards by the same code, so a sweep's tables do not depend on where its runs executed. Finished runs
are skipped; a run that left a training checkpoint (written at its end and on SIGTERM, e.g. a cancelled Ray
task or a pre-empted node) continues from it when the benchmark runs with --resume (the harness decides
and logs it).

Ray workers must see the same --output and --data-root paths (one machine, or a shared filesystem) and have
medclipsvd installed. Tracking from many processes at once needs an MLflow *server*: N writers on one
SQLite file (the default ./mlruns store) lock each other, so that combination is refused up front."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medclipsvd.engine.run import run_experiment
from medclipsvd.engine.run_folder import RESULTS_FILE
from medclipsvd.engine.spec import RunSpec
from medclipsvd.engine.steps import SplitsProvider, default_provider
from medclipsvd.errors import MedClipSVDError

EXECUTORS = ("local", "ray")
Todo = list[tuple[str, RunSpec]]    # (label for the log, run)


def _summary_line(res: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in res["summary"].items())


class LocalExecutor:
    """Runs in this process, one after another (the tracker's runs nest under the benchmark's)."""

    name = "local"

    def execute(self, todo: Todo, tracker, provider: SplitsProvider, log: Callable = print) -> int:
        for label, run in todo:
            res = run_experiment(run, tracker=tracker, provider=provider)
            log(f"{label}: {_summary_line(res)}")
        return len(todo)


# ---------------------------------------------------------------------------------------------- Ray
def tracking_uri_for(tracking_uri: str | None) -> str:
    """The store `make_tracker` would use (without creating anything)."""
    from medclipsvd.tracking.store import default_tracking_uri

    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def check_tracking(tracking_uri: str | None, enabled: bool) -> None:
    """Ray runs log from many processes at once: only an MLflow server takes that."""
    if not enabled:
        return
    uri = tracking_uri_for(tracking_uri)
    if not uri.startswith(("http://", "https://", "databricks")):
        raise MedClipSVDError(
            f"--executor ray with the MLflow store {uri}: concurrent Ray tasks cannot share a SQLite/file "
            "store (they lock or corrupt it). Start a tracking server (mlflow server --host 0.0.0.0 --port 5000 "
            "--backend-store-uri sqlite:///mlflow.db) and pass --tracking-uri http://HOST:5000, or use --no-mlflow")


# Ray starts a worker process per concurrent task, so fractions bound how many share a core or a GPU
MIN_CPUS_PER_RUN = 0.25
MIN_GPUS_PER_RUN = 0.01


@dataclass
class RayExecutor:
    """Each run is one Ray task with `cpus_per_run` CPUs and `gpus_per_run` GPUs (a fraction packs several
    runs on one GPU: 0.25 = four). `address`: an existing cluster ('auto', 'ray://HOST:10001', HOST:PORT);
    None joins the cluster this process already joined or RAY_ADDRESS, else starts a local one."""

    address: str | None = None
    gpus_per_run: float | None = None     # None: 0.25 when the cluster has GPUs, else 0
    cpus_per_run: float | None = None     # None: 1 on CPU, 4 per GPU run (DataLoader workers feed the GPU)
    tracking_uri: str | None = None       # an MLflow server, or None with tracking off
    experiment: str | None = None
    max_retries: int = 2                  # worker or node lost: Ray reruns the task (it resumes)

    name = "ray"

    def __post_init__(self):
        g = self.gpus_per_run
        if g is not None and not (g == 0 or MIN_GPUS_PER_RUN <= g <= 1 or (g > 1 and float(g).is_integer())):
            raise MedClipSVDError(f"--gpus-per-run {g}: use 0, a fraction of one GPU from {MIN_GPUS_PER_RUN} "
                                  f"(0.25 packs four runs on a GPU) or a whole number")
        c = self.cpus_per_run
        if c is not None and not (MIN_CPUS_PER_RUN <= c < float("inf")):
            # Ray starts one worker process per concurrent task: 0.001 CPU a run would fork a thousand per core
            raise MedClipSVDError(f"--cpus-per-run {c}: use a finite number from {MIN_CPUS_PER_RUN} (four runs "
                                  f"per core; each run is a process of its own), e.g. 1")

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise MedClipSVDError("--executor ray needs Ray: pip install 'medclipsvd[ray]' (or pip install ray)"
                                  ) from None
        started = False
        if not ray.is_initialized():
            kw = {"address": self.address} if self.address else {}
            try:
                ray.init(include_dashboard=False, logging_level="warning", **kw)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise MedClipSVDError(f"cannot reach the Ray cluster {self.address or '(local)'}: "
                                      f"{str(exc).splitlines()[0]}; check --address (e.g. auto, HOST:6379)"
                                      ) from None
            started = True
        return ray, started

    def execute(self, todo: Todo, tracker, provider: SplitsProvider | None, log: Callable = print) -> int:
        if not todo:
            return 0
        ray, started = self._ray()
        try:
            resources = ray.cluster_resources()
            has_gpu = resources.get("GPU", 0) > 0
            gpus = self.gpus_per_run if self.gpus_per_run is not None else (0.25 if has_gpu else 0.0)
            cpus = self.cpus_per_run if self.cpus_per_run is not None else (4.0 if gpus else 1.0)
            if started and not self.address and not os.environ.get("RAY_ADDRESS"):
                check_feasible(cpus, gpus, resources)  # a local cluster of fixed size (others may autoscale)
            parent = getattr(tracker, "run_id", None)
            task = ray.remote(_ray_run).options(num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries)
            tracking = (self.tracking_uri, self.experiment, parent) if self.tracking_uri else None
            refs = {task.remote(run, provider, tracking, cpus): (label, run) for label, run in todo}
            log(f"ray: {len(refs)} run(s) submitted ({cpus:g} CPU, {gpus:g} GPU each)")
            failed = []
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                label, run = refs.pop(ready[0])
                try:
                    res = ray.get(ready[0])
                except Exception as exc:  # one run's failure must not lose the others' results
                    cause = getattr(exc, "cause", None) or exc
                    failed.append(label)
                    log(f"{label}: FAILED: {str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__}")
                    continue
                _ensure_results_file(run, res)
                log(f"{label}: {_summary_line(res)}")
        finally:
            if started:
                ray.shutdown()
        if failed:
            raise MedClipSVDError(f"{len(failed)} of {len(todo)} Ray run(s) failed ({failed[0]}, ...); the others "
                                  "have results. Fix the cause and rerun the same command: finished runs are "
                                  "skipped, interrupted ones resume")
        return len(todo)


def check_feasible(cpus: float, gpus: float, resources: dict) -> None:
    """A task asking for more than a fixed-size cluster has would wait forever (Ray only warns): refuse it."""
    for option, want, kind in (("--cpus-per-run", cpus, "CPU"), ("--gpus-per-run", gpus, "GPU")):
        have = float(resources.get(kind, 0))
        if want > have:
            raise MedClipSVDError(f"{option} {want:g}: the local Ray cluster has {have:g} {kind}(s) in all, so no "
                                  f"run could ever start; ask for at most {have:g}, or join a larger cluster "
                                  f"with --address")


def _ensure_results_file(run: RunSpec, res: dict) -> None:
    """Without a shared filesystem the worker's results.json is on its node: keep a copy where the tables
    are aggregated (adapters and plots stay on the worker's disk)."""
    from medclipsvd.engine.evaluator import write_results

    path = Path(run.output) / RESULTS_FILE
    if not path.exists():
        write_results(path, res)


@functools.lru_cache(maxsize=8)
def _worker_splits(name: str, root: str, allow_missing: bool, follow_symlinks: bool = False, volume: tuple = ()):
    """Datasets loaded (and checked) once per Ray worker process, reused by its later tasks. ``volume``: the
    hospital options as (key, value) pairs (hashable, for the cache)."""
    return default_provider(allow_missing, follow_symlinks, dict(volume))(name, root)


@functools.lru_cache(maxsize=4)
def _worker_tracker(uri: str, experiment: str | None, parent: str | None):
    from medclipsvd.tracking import make_tracker

    tracker = make_tracker(uri, True, experiment=experiment)
    if parent:
        tracker.default_tags["mlflow.parentRunId"] = parent  # nest under the benchmark's run
    return tracker


def _ray_run(run: RunSpec, provider: SplitsProvider | None, tracking, cpus: float) -> dict:
    """One benchmark run inside a Ray worker."""
    import torch

    # Ray sets OMP_NUM_THREADS to the task's CPUs; torch reads it at import, which in a reused worker may
    # have happened under another task's setting.
    torch.set_num_threads(max(1, int(cpus)))
    if provider is None:
        volume = tuple(sorted((k, v) for k, v in run.input_policy().items()))
        provider = functools.partial(_worker_splits, allow_missing=run.allow_missing,
                                     follow_symlinks=run.follow_symlinks, volume=volume)
    if run.num_workers is None and torch.cuda.is_available():
        from medclipsvd.data.workers import max_num_workers

        # this task's CPUs, not the whole node's (and never above the worker limit)
        run = run.replace(num_workers=max(0, min(int(cpus) - 1, max_num_workers())))
    tracker = _worker_tracker(*tracking) if tracking else None
    return run_experiment(run, tracker=tracker, provider=provider)


def make_executor(name: str, *, address: str | None = None, gpus_per_run: float | None = None,
                  cpus_per_run: float | None = None, tracking_uri: str | None = None,
                  tracking_enabled: bool = True):
    """The executor for `benchmark --executor NAME`; refuses unusable combinations before any work."""
    if name not in EXECUTORS:
        raise MedClipSVDError(f"--executor {name!r}: choose from {', '.join(EXECUTORS)}")
    if name == "local":
        extra = [o for o, v in (("--address", address), ("--gpus-per-run", gpus_per_run),
                                ("--cpus-per-run", cpus_per_run)) if v is not None]
        if extra:
            raise MedClipSVDError(f"{', '.join(extra)} apply to --executor ray only")
        return LocalExecutor()
    check_tracking(tracking_uri, tracking_enabled)
    return RayExecutor(address=address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
                       tracking_uri=tracking_uri_for(tracking_uri) if tracking_enabled else None,
                       experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME"))
