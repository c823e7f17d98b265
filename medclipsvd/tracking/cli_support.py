"""What `medclipsvd train --register --name NAME --alias ALIAS` needs: option checks before training starts,
and the registration of the run the tracker just closed."""
from __future__ import annotations

import contextlib
from typing import Callable

from medclipsvd.errors import MedClipSVDError
from medclipsvd.methods.registry import TRAINED_METHODS  # methods whose run has an adapter to serve
from medclipsvd.tracking.store import disk_error


def check_register_options(name: str | None, no_mlflow: bool, method: str, alias: str | None = None) -> None:
    if not name:
        raise MedClipSVDError("--register needs --name NAME (the registered model, e.g. --name chest-xray)")
    if no_mlflow:
        raise MedClipSVDError("--register needs MLflow tracking; drop --no-mlflow")
    if method not in TRAINED_METHODS:
        raise MedClipSVDError(f"--register: method {method!r} trains no adapter, so there is nothing to register; "
                              "use --method svd (default), lora or full")
    from medclipsvd.tracking.registry_checks import check_registry_names

    check_registry_names(name, alias)  # MLflow's rules, now rather than after training


class ModelNotLoggedError(MedClipSVDError):
    """Training finished but its model could not be stored in MLflow because a disk is full or read-only."""


@contextlib.contextmanager
def mlflow_silenced():
    """MLflow logs its own failures with tracebacks (e.g. artefact uploads); while we log a model, the one
    line we print says what failed and what to do, so theirs are held back."""
    import logging

    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def log_model_after_training(tracker, method: str, log: Callable[[str], None] = print,
                             output: str | None = None, name: str | None = None) -> str | None:
    """Log the tracker's last (complete) training run's adapter as an MLflow LoggedModel; returns its URI.
    A server that went away is a note (training results are on disk and `medclipsvd register` can log it
    later); a full or read-only disk is an error (exit 2) that marks the run FAILED, so neither the exit
    status nor the MLflow UI says "done" for a model that is not there."""
    run_id = getattr(tracker, "last_run_id", None)
    full = disk_error(getattr(tracker, "offline_error", None))
    if full is not None:  # the store's disk filled during the run: the run waits in the outbox
        raise ModelNotLoggedError(f"the MLflow store {getattr(tracker, 'tracking_uri', '')} could not take the "
                                  f"run's files: {_describe(full)}. The run is kept in {tracker.outbox} and the "
                                  f"training results are on disk{f' in {output}' if output else ''}; free some space, "
                                  "then `medclipsvd sync` uploads the run (and `medclipsvd register --run-id RUN_ID "
                                  "--name NAME` logs its model).")
    if method not in TRAINED_METHODS or not run_id or not getattr(tracker, "last_run_complete", False):
        return None
    from medclipsvd.tracking.registry import log_run_model

    later = f"`medclipsvd register --run-id {run_id} --name {name or 'NAME'}`"
    try:
        with mlflow_silenced():
            model = log_run_model(run_id, tracking_uri=tracker.tracking_uri)
    except Exception as exc:  # the server went away after the run, or an unexpected MLflow refusal
        disk = disk_error(exc)
        if disk is not None:
            _mark_failed(tracker, run_id, f"the model was not logged: {_describe(disk)}")
            kept = f"the training results are on disk in {output} (results.json, adapter/)" if output else \
                "the training results are on disk"
            raise ModelNotLoggedError(f"the trained model of MLflow run {run_id} was not logged: {_describe(disk)}; "
                                      f"the run is marked FAILED and {kept}. Free some space there, then {later} "
                                      "logs (and registers) it.") from None
        log(f"note: the model of run {run_id} was not logged as an MLflow model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); {later} logs and registers it later")
        return None
    log(f"MLflow model: {model.model_uri} (logged by run {run_id})")
    return model.model_uri


def _describe(disk: OSError | str) -> str:
    if isinstance(disk, str):
        return f"the tracking server's disk reports '{disk}'"
    from medclipsvd.io.atomic import disk_reason

    target = disk.filename2 or disk.filename  # a copy's destination is where the space ran out
    return f"{disk_reason(disk)}{f' ({target})' if target else ''}"


def _mark_failed(tracker, run_id: str, why: str) -> None:
    """Best effort: the store may live on the disk that is full."""
    from mlflow.entities import RunTag

    with mlflow_silenced(), contextlib.suppress(Exception):
        tracker.client.log_batch(run_id, tags=[RunTag("medclipsvd.model_status", why[:5000])])
    with mlflow_silenced(), contextlib.suppress(Exception):
        tracker.client.set_terminated(run_id, "FAILED")


def register_after_training(tracker, name: str, alias: str | None, tracking_uri: str | None,
                            log: Callable[[str], None] = print) -> None:
    """Register the tracker's last run, or say how to do it later if the server was lost during the run."""
    from medclipsvd.tracking.registry import register_run

    run_id = getattr(tracker, "last_run_id", None)
    if not run_id or not getattr(tracker, "last_run_complete", False):
        log("not registered: the run did not reach the MLflow server completely. After `medclipsvd sync`, run "
            f"`medclipsvd register --run-id RUN_ID --name {name}" + (f" --alias {alias}`" if alias else "`")
            + " with the run ID that sync prints.")
        return
    reg = register_run(run_id, name, alias=alias, tracking_uri=getattr(tracker, "tracking_uri", tracking_uri),
                       log=log)
    log(f"registered {reg.model_uri} (source {reg.source}) from run {run_id} ({reg.size_bytes / 1e6:.2f} MB)"
        + (f"; alias {reg.alias_uri}" if reg.alias_uri else "") + (f"; files sha256 {reg.digest}" if reg.digest else ""))


def training_run_id(adapter, tracker) -> str | None:
    """The MLflow run that trained `adapter` (recorded in the results.json beside it), if this tracker's
    store has it."""
    import json
    from pathlib import Path

    results = Path(adapter).parent / "results.json"
    client = getattr(tracker, "client", None)
    if client is None or not results.is_file():
        return None
    try:
        run_id = json.loads(results.read_text()).get("mlflow_run_id")
        run = client.get_run(run_id) if run_id else None
    except Exception:  # another store, an unreadable file: report unlinked
        return None
    if run is not None and run.info.lifecycle_stage == "deleted":  # not nested under a run in the trash
        import warnings

        warnings.warn(f"the training run {run_id} of {adapter} is deleted in MLflow; this run is not linked to it")
        return None
    return run.info.run_id if run is not None else None


def tracked_evaluation(tracker, adapter: str, evaluate: Callable[[], tuple[dict, object]]):
    """Run `evaluate()` (-> results, path of evaluation.json) inside its own tracked run."""
    from pathlib import Path

    name = f"evaluate-{Path(adapter).resolve().parent.name}"
    tags = {"kind": "evaluate"}
    train_run = training_run_id(adapter, tracker)
    if train_run:  # shown under its training run in the MLflow UI
        tags.update({"medclipsvd.training_run_id": train_run, "mlflow.parentRunId": train_run})
    with tracker.run(name, tags=tags):
        results, out = evaluate()
        params = {k: results.get(k) for k in ("dataset", "backbone", "method", "split", "subsample", "shots",
                                               "seed", "template")}
        params["adapter"] = str(Path(adapter).resolve())
        tracker.log_params({k: v for k, v in params.items() if v is not None})
        for split, m in results.get("eval", {}).items():
            tracker.log_metrics({f"{split}/{key}": float(m[key]) for key in
                                 ("accuracy", "balanced_accuracy", "macro_f1", "auroc_ovr", "ece")
                                 if key in m and m[key] == m[key]})
        out = Path(out)
        tracker.log_artifact(str(out))
        for plot in sorted(out.parent.glob("confusion_*.png")):
            tracker.log_artifact(str(plot), "plots")
    return results, out


def benchmark_parent(tracker, bench, run: Callable[[], dict]) -> dict:
    """Run a benchmark under one parent run; the per-run trackings nest under it; tables are its artefacts."""
    from pathlib import Path

    # the mode (parity or improved) tells the paper's tables from medclipsvd's: the nested runs carry it, and
    # so does the parent, so that a search over parents finds them
    tags = {"kind": "benchmark", "protocol": getattr(bench, "protocol", None), "suite": getattr(bench, "suite", None),
            "mode": getattr(getattr(bench, "base", None), "mode", None)}  # the sweep's base RunSpec
    with tracker.run(f"benchmark-{tags['protocol']}-{tags['suite']}", tags=tags):
        if hasattr(bench, "params"):
            tracker.log_params(bench.params())
        report = run()
        for key, path in (report.get("tables") or {}).items():
            if path and Path(path).exists():
                tracker.log_artifact(str(path), "tables")
        tracker.log_metrics({"runs_done": float(report.get("ran", 0)), "runs_skipped": float(report.get("skipped", 0))})
    return report
