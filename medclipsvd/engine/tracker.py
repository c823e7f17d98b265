"""The tracking interface the engine and protocols call. Implementations must never raise on a
lost server mid-run: they keep results on local disk and say how to upload them later."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    @property
    def run_id(self) -> str | None: ...

    def run(self, name: str, tags: Mapping[str, Any] | None = None, nested: bool = False
            ) -> contextlib.AbstractContextManager: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_dataset(self, record: Mapping[str, Any]) -> None: ...


class NullTracker:
    """Tracking switched off (`--no-mlflow`): every call does nothing."""

    run_id = None

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, Any] | None = None, nested: bool = False) -> Iterator[None]:
        yield None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_dataset(self, record: Mapping[str, Any]) -> None:
        pass
