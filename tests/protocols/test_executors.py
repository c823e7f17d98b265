"""Benchmark executors: Ray tasks on a local cluster give the local executor's tables and, with the same
torch thread count, bit-identical results; unusable combinations are refused before any work."""
import json
import sys
from pathlib import Path

import pytest
import torch

from medclipsvd.engine.synthetic import write_synthetic_dataset
from medclipsvd.errors import MedClipSVDError
from medclipsvd.protocols.executors import LocalExecutor, RayExecutor, check_tracking, make_executor
from medclipsvd.protocols.harness import BenchmarkSpec, plan_runs, run_benchmark


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for this module, the only one that uses Ray (starting one takes tens of seconds
    on 2 cores); shut down after it, so its workers and signal handlers do not outlive these tests."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    from medclipsvd.data import load_dataset

    root = write_synthetic_dataset(tmp_path_factory.mktemp("d") / "data", patients_per_class=3,
                                   images_per_patient=1, size=32)
    return lambda name, _root: load_dataset("custom", root)  # shipped to the Ray workers by value


def _one_thread_local(bench, provider):
    """The local executor with one torch thread, as each 1-CPU Ray task runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_benchmark(bench, provider=provider, log=lambda *_: None)
    finally:
        torch.set_num_threads(before)


def _results(root: Path) -> dict:
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))}


def test_ray_matches_local_bit_for_bit(ray_cluster, provider, tmp_path):
    # two runs (a trained one and a zero-shot one) are enough to compare the executors; each Ray task pays a
    # worker's torch import, which is most of this test's time on 2 cores
    kw = dict(suite="BUSI", protocol="few_shot", shots=[1], seeds=[1], methods=["svd", "zero_shot"],
              backbone="tiny-clip", data_root="unused", device="cpu", max_steps=2, cache_dir="off")
    local = _one_thread_local(BenchmarkSpec(output=str(tmp_path / "local"), **kw), provider)
    lines = []
    remote = run_benchmark(BenchmarkSpec(output=str(tmp_path / "ray"), **kw), provider=provider, log=lines.append,
                           executor=RayExecutor(cpus_per_run=1))
    assert (remote["executor"], remote["ran"], local["ran"]) == ("ray", 2, 2)
    for key in ("markdown", "csv"):
        assert Path(remote["tables"][key]).read_text() == Path(local["tables"][key]).read_text()
    a, b = _results(tmp_path / "local" / "runs"), _results(tmp_path / "ray" / "runs")
    assert a.keys() == b.keys() and len(a) == 2
    for name in a:
        assert a[name]["eval"] == b[name]["eval"], name  # probabilities-derived metrics, bit for bit
        assert a[name].get("train", {}).get("final_loss") == b[name].get("train", {}).get("final_loss")
    # a second call finds every result and submits nothing
    again = run_benchmark(BenchmarkSpec(output=str(tmp_path / "ray"), **kw), provider=provider,
                          log=lambda *_: None, executor=RayExecutor())
    assert (again["ran"], again["skipped"]) == (0, 2)


@pytest.mark.slow
@pytest.mark.realdata
def test_acceptance_command_on_busi(ray_cluster, shared_data, tmp_path):
    """The issue's command, --executor ray on the session's local cluster, against the local executor."""
    from typer.testing import CliRunner

    from medclipsvd.cli.app import app

    args = ["benchmark", "--suite", "BUSI", "--protocol", "few_shot", "--shots", "1,2", "--seeds", "1",
            "--method", "svd,zero_shot", "--backbone", "tiny-biomedclip", "--data-root",
            str(shared_data / "biomedical"), "--max-steps", "5", "--no-mlflow", "--cache-dir", str(tmp_path / "c")]
    tables = {}
    for name, extra in (("ray", ["--executor", "ray"]), ("local", [])):
        res = CliRunner().invoke(app, [*args, "--output", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
        tables[name] = (tmp_path / name / "tables" / "few_shot.md").read_text()
    assert "| svd |" in tables["ray"] and tables["ray"] == tables["local"]


@pytest.mark.parametrize("uri", ["sqlite:///mlruns/mlflow.db", "file:///tmp/mlruns", "./mlruns"])
def test_ray_refuses_a_shared_sqlite_or_file_store(uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(MedClipSVDError, match="MLflow store .*--tracking-uri http://HOST:5000"):
        make_executor("ray", tracking_uri=uri)
    check_tracking(uri, enabled=False)  # --no-mlflow: nothing to share
    check_tracking("http://127.0.0.1:5000", enabled=True)


def test_ray_refuses_the_default_store_from_the_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medclipsvd.cli.app import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["benchmark", "--suite", "BUSI", "--data-root", str(tmp_path), "--output",
                                   str(tmp_path / "o"), "--executor", "ray"])
    assert res.exit_code != 0
    assert "concurrent Ray tasks cannot share" in str(res.exception or res.output)
    assert not (tmp_path / "o").exists() and not (tmp_path / "mlruns").exists()  # refused before any work


def test_option_checks():
    with pytest.raises(MedClipSVDError, match="apply to --executor ray only"):
        make_executor("local", gpus_per_run=0.5)
    with pytest.raises(MedClipSVDError, match="choose from local, ray"):
        make_executor("dask")
    with pytest.raises(MedClipSVDError, match="--gpus-per-run 1.5"):
        RayExecutor(gpus_per_run=1.5)
    assert isinstance(make_executor("local"), LocalExecutor)
    assert make_executor("ray", tracking_enabled=False).tracking_uri is None


@pytest.mark.parametrize("kw,match", [
    ({"cpus_per_run": 0.001}, r"--cpus-per-run 0.001: use a finite number from 0.25"),  # 1000 processes a core
    ({"cpus_per_run": float("nan")}, "--cpus-per-run nan"),
    ({"cpus_per_run": float("inf")}, "--cpus-per-run inf"),
    ({"gpus_per_run": -2.0}, "--gpus-per-run -2.0"),
    ({"gpus_per_run": 0.001}, r"--gpus-per-run 0.001: use 0, a fraction of one GPU from 0.01"),
    ({"gpus_per_run": float("nan")}, "--gpus-per-run nan"),
])
def test_ray_parallelism_is_bounded(kw, match):
    with pytest.raises(MedClipSVDError, match=match):
        RayExecutor(**kw)


def test_accepted_ray_resources():
    for kw in ({"cpus_per_run": 0.25}, {"cpus_per_run": 64}, {"gpus_per_run": 0}, {"gpus_per_run": 0.01},
               {"gpus_per_run": 1}, {"gpus_per_run": 4}):
        RayExecutor(**kw)


def test_a_task_larger_than_a_local_cluster_is_refused_instead_of_waiting_forever():
    from medclipsvd.protocols.executors import check_feasible

    check_feasible(2.0, 0.0, {"CPU": 2.0})
    with pytest.raises(MedClipSVDError, match=r"--cpus-per-run 4: the local Ray cluster has 2 CPU\(s\)"):
        check_feasible(4.0, 0.0, {"CPU": 2.0})
    with pytest.raises(MedClipSVDError, match=r"--gpus-per-run 0.25: the local Ray cluster has 0 GPU"):
        check_feasible(1.0, 0.25, {"CPU": 2.0})


def test_ray_task_workers_follow_its_cpus_within_the_worker_limit(monkeypatch):
    from medclipsvd.protocols import executors

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(executors, "run_experiment", lambda run, **kw: run.num_workers)
    monkeypatch.setattr("medclipsvd.data.workers.available_cores", lambda: 4)  # limit: 16
    monkeypatch.delenv("MEDCLIPSVD_MAX_WORKERS", raising=False)
    bench = BenchmarkSpec(suite="BUSI", shots=[1], seeds=[1], methods=["zero_shot"], data_root="unused")
    run = plan_runs(bench)[0]
    before = torch.get_num_threads()
    try:
        assert executors._ray_run(run, lambda *a: None, None, 4.0) == 3         # its CPUs, one left for training
        assert executors._ray_run(run, lambda *a: None, None, 1000.0) == 16     # never above the worker limit
    finally:
        torch.set_num_threads(before)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MedClipSVDError, match=r"pip install 'medclipsvd\[ray\]'"):
        RayExecutor().execute([("x", None)], None, None)


