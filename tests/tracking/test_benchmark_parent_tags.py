"""The benchmark's parent MLflow run carries the mode tag (parity / improved), like its nested runs."""
from __future__ import annotations

import contextlib

import pytest


class _Recorder:
    def __init__(self):
        self.runs = []

    @contextlib.contextmanager
    def run(self, name, tags=None, **kw):
        self.runs.append((name, dict(tags or {})))
        yield self

    def log_params(self, params):
        pass

    def log_metrics(self, metrics):
        pass

    def log_artifact(self, *a, **k):
        pass


@pytest.mark.parametrize("mode", ["parity", "improved"])
def test_parent_run_is_tagged_with_the_mode(mode, tmp_path):
    from medclipsvd.protocols.harness import BenchmarkSpec
    from medclipsvd.tracking.cli_support import benchmark_parent

    bench = BenchmarkSpec(suite="BUSI", shots=[1], seeds=[1], backbone="tiny-biomedclip", data_root=str(tmp_path),
                          output=str(tmp_path / "bench"), device="cpu", mode=mode)
    tracker = _Recorder()
    benchmark_parent(tracker, bench, lambda: {"ran": 0, "skipped": 0, "tables": {}})
    [(name, tags)] = tracker.runs
    assert tags["kind"] == "benchmark" and tags["mode"] == mode and tags["protocol"] == "few_shot"
