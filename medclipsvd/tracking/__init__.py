"""Experiment tracking. The engine talks to a `Tracker`; MLflow is one implementation."""
from medclipsvd.tracking.base import NullTracker, Tracker

__all__ = ["NullTracker", "Tracker"]
