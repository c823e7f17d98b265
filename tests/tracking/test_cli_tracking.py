"""Tracking of `evaluate` and `benchmark` (parent run with nested per-dataset/K/seed runs), and the CLI's
argument checks for `train --register` and `register`."""
from __future__ import annotations

import json

import pytest
from tracking_helpers import MODEL_NAME, run_cli, train_args


def test_evaluate_is_tracked(trained_run, tmp_path):
    from mlflow import MlflowClient

    from typer.testing import CliRunner

    from medclipsvd.cli.app import app

    result = CliRunner().invoke(app, ["evaluate", "--adapter", str(trained_run.output / "adapter"), "--device",
                                      "cpu", "--output", str(tmp_path / "eval"), "--tracking-uri",
                                      trained_run.server.uri])
    assert result.exit_code == 0, result.output[-3000:]
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    client = MlflowClient(trained_run.server.uri)
    exp = client.get_experiment_by_name("medclipsvd")
    [run] = client.search_runs([exp.experiment_id], "tags.kind = 'evaluate'")
    assert run.data.metrics["test/accuracy"] == pytest.approx(evaluation["summary"]["test"])
    assert run.data.params["backbone"] == "tiny-biomedclip" and run.data.tags["dataset"] == "custom"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"evaluation.json", "plots"}


def test_benchmark_runs_nest_under_a_parent(mlflow_server, phi_dataset, tmp_path):
    from mlflow import MlflowClient

    from medclipsvd.data import load_dataset
    from medclipsvd.protocols.harness import BenchmarkSpec, run_benchmark
    from medclipsvd.tracking import make_tracker
    from medclipsvd.tracking.cli_support import benchmark_parent

    tracker = make_tracker(mlflow_server.uri, True, experiment="bench-test", outbox=tmp_path / "box")
    bench = BenchmarkSpec(suite="BUSI", shots=[1], seeds=[1, 2], backbone="tiny-biomedclip",
                          data_root=str(phi_dataset), output=str(tmp_path / "bench"), device="cpu", max_steps=2)
    report = benchmark_parent(tracker, bench, lambda: run_benchmark(
        bench, tracker=tracker, provider=lambda name, root: load_dataset("custom", phi_dataset), log=lambda m: None))
    assert report["ran"] == 2
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("bench-test")
    runs = client.search_runs([exp.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("kind") == "benchmark"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["seed"] for r in children) == ["1", "2"]
    assert all(r.data.tags["K"] == "1" and "test/accuracy" in r.data.metrics for r in children)
    assert any(a.path == "tables" for a in client.list_artifacts(parent.info.run_id))
    assert parent.data.metrics["runs_done"] == 2.0


@pytest.mark.parametrize("name, no_mlflow, method, message", [
    (None, False, "svd", "--register needs --name"),
    ("x", True, "svd", "drop --no-mlflow"),
    ("x", False, "zero_shot", "nothing to register"),
])
def test_register_option_checks(name, no_mlflow, method, message):
    from medclipsvd.errors import MedClipSVDError
    from medclipsvd.tracking.cli_support import check_register_options

    with pytest.raises(MedClipSVDError, match=message):
        check_register_options(name, no_mlflow, method)
    check_register_options("x", False, method if method != "zero_shot" else "lora")  # valid combination


def test_train_register_without_name_fails_before_training(phi_dataset, tmp_path):
    proc = run_cli(train_args(phi_dataset, tmp_path / "run", "http://127.0.0.1:1", "--register"), cwd=tmp_path)
    assert proc.returncode == 2 and "--register needs --name" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_register_errors(mlflow_server, tmp_path):
    unknown = run_cli(["register", "--run-id", "0" * 32, "--name", MODEL_NAME, "--tracking-uri", mlflow_server.uri],
                      cwd=tmp_path)
    assert unknown.returncode == 2 and "is not in the tracking store" in unknown.stderr
    bad_tag = run_cli(["register", "--run-id", "x", "--name", "n", "--tag", "novalue"], cwd=tmp_path)
    assert bad_tag.returncode == 2 and "KEY=VALUE" in bad_tag.stderr
