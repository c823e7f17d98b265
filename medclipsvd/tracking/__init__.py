"""Experiment tracking. The engine talks to a `Tracker`; MLflow is one implementation.

`make_tracker(tracking_uri, enabled)` is what the CLI calls before any work starts: it resolves the store
(--tracking-uri, else MLFLOW_TRACKING_URI, else SQLite + artefacts under ./mlruns), checks that it answers
(TrackingError with the URI and the fix if not) and returns an `MlflowTracker`, or a `NullTracker` when
tracking is off. The registry lives in `medclipsvd.tracking.registry`, serving in `medclipsvd.serving`;
the outbox upload in `.sync`. MLflow is imported lazily so `import medclipsvd.tracking` stays cheap."""
from __future__ import annotations

import os

from medclipsvd.engine.tracker import NullTracker, Tracker
from medclipsvd.tracking.store import TrackingError, default_tracking_uri, resolve_tracking_uri

__all__ = ["NullTracker", "Tracker", "TrackingError", "make_tracker", "default_tracking_uri",
           "resolve_tracking_uri"]


def make_tracker(tracking_uri: str | None, enabled: bool, *, experiment: str | None = None,
                 outbox: str | os.PathLike | None = None, system_metrics: bool = True) -> Tracker:
    """The tracker for one command. Raises TrackingError before anything runs if the store is unusable.
    `system_metrics`: sample CPU/memory/disk/network (and GPU) use into system/* metrics of top-level runs."""
    if not enabled:
        return NullTracker()
    from medclipsvd.tracking import store
    from medclipsvd.tracking.mlflow_tracker import MlflowTracker

    uri = resolve_tracking_uri(tracking_uri)
    store.configure_http()
    store.probe(uri)
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or store.DEFAULT_EXPERIMENT
    tracker = MlflowTracker(uri, experiment=experiment, outbox=outbox, system_metrics=system_metrics)
    try:
        tracker.experiment_id()
    except Exception as exc:
        raise TrackingError(store.unreachable_message(uri, f"cannot open experiment {experiment!r} "
                                                           f"({type(exc).__name__})")) from None
    return tracker
