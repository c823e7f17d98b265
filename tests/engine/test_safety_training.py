"""Safety of training outputs (issue 10, items 4, 6, 9): divergence stops cleanly; outputs are atomic and
locked; a full disk is one clear error that keeps earlier outputs; benchmark --resume keeps the loss history."""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyBackbone, ToyImages  # noqa: E402

from medclipsvd.engine import trainer as trainer_mod  # noqa: E402
from medclipsvd.engine.trainer import TrainingDiverged, TrainSettings, train  # noqa: E402

CLASSES = ["a", "b", "c"]


class NaNAt(ToyImages):
    """ToyImages whose items turn NaN from global draw `bad_from` on (a corrupt batch mid-run)."""

    def __init__(self, bad_from: int):
        super().__init__()
        self.bad_from, self.draws = bad_from, 0

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        self.draws += 1
        return (x * float("nan"), y) if self.draws > self.bad_from else (x, y)


def _settings(tmp_path, **kw):
    base = dict(lr=0.05, total_steps=6, t_max=6, batch_size=6, seed=1, device="cpu", progress=False,
                checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    return TrainSettings(**(base | kw))


def test_non_finite_loss_stops_with_step_checkpoint_and_hint(tmp_path):
    bb = ToyBackbone()
    data = NaNAt(bad_from=6 * 2 + 3)  # steps 1-2 clean, step 3 sees NaN images
    with pytest.raises(TrainingDiverged) as info:
        train(bb, bb.trainable(), data, CLASSES, "a {}", _settings(tmp_path), text_trainable=True)
    msg = str(info.value)
    assert "step 3/6" in msg and "loss is nan" in msg and "--lr 0.005" in msg, msg
    assert f"{tmp_path / 'ckpt'} (step 2)" in msg, msg
    meta = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert meta["step"] == 2  # nothing written after the divergence
    state = torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["params"].values())


def test_exploding_sigma_stops_before_anything_non_finite_is_written(tmp_path):
    bb = ToyBackbone()
    bb.img_sigma.register_hook(lambda g: g * float("nan"))  # an overflowing gradient: finite loss, NaN update
    with pytest.raises(TrainingDiverged, match=r"step 1/6: the trained tensor img_sigma became NaN/inf.*no "
                                               r"checkpoint was written"):
        train(bb, bb.trainable(), ToyImages(), CLASSES, "a {}", _settings(tmp_path, checkpoint_every=0),
              text_trainable=True)
    assert not (tmp_path / "ckpt").exists()


def test_train_lr_1e6_on_tiny_clip_writes_no_adapter(synthetic_root, tmp_path):
    """The issue's reproduction: `--lr 1e6` used to save 72/72 NaN σ and crash later in the metrics."""
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.run import run_experiment

    spec = spec_from_pipeline("demo", data_root=str(synthetic_root), output=str(tmp_path / "run"),
                              backbone="tiny-clip", device="cpu", max_steps=8, lr=1e6, progress=False, shots=2)
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        run_experiment(spec)
    assert not (tmp_path / "run" / "adapter").exists() and not (tmp_path / "run" / "results.json").exists()


# --- locks --------------------------------------------------------------------------------------
def _tiny_spec(root, out, **kw):
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline

    return spec_from_pipeline("demo", data_root=str(root), output=str(out), backbone="tiny-clip", device="cpu",
                              max_steps=2, lr=0.05, progress=False, shots=1, **kw)


def test_second_run_into_a_locked_output_is_refused(synthetic_root, tmp_path):
    from medclipsvd.engine.run import run_experiment
    from medclipsvd.io import OutputLockedError, output_lock

    out = tmp_path / "run"
    with output_lock(out, what="first run"):  # a live run of this process holds it
        with pytest.raises(OutputLockedError, match=r"in use by process \d+ .*first run.*another --output"):
            run_experiment(_tiny_spec(synthetic_root, out))
    assert sorted(p.name for p in out.iterdir()) == []  # the refused run wrote nothing, the lock is released


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import socket
    import subprocess

    from medclipsvd.io import LOCK_NAME, output_lock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    with output_lock(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_concurrent_writers_never_share_a_temp_file(tmp_path):
    """Two writers of one file (the old code used one fixed `.tmp` name): every write lands whole."""
    from concurrent.futures import ThreadPoolExecutor

    from medclipsvd.io import write_bytes

    blobs = [bytes([i]) * 200_000 for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda b: write_bytes(tmp_path / "results.json", b), blobs * 3))
    assert (tmp_path / "results.json").read_bytes() in blobs
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# --- full disk ----------------------------------------------------------------------------------
@contextlib.contextmanager
def disk_full_for(monkeypatch, name: str):
    """ENOSPC for writes whose target file name is `name` (the temp file is `.NAME.<pid>.<rand>.tmp`)."""
    from medclipsvd.io import atomic

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to map a file descriptor to its path")
    real = atomic._os_write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(atomic, "_os_write", write)
    yield


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(synthetic_root, tmp_path_factory):
    from medclipsvd.engine.run import run_experiment

    out = tmp_path_factory.mktemp("full-disk") / "run"
    run_experiment(_tiny_spec(synthetic_root, out))
    return out


@pytest.mark.parametrize("victim", ["checkpoint.pt", "adapter.safetensors", "training_curve.png", "results.json"])
def test_full_disk_is_one_clear_error_and_keeps_earlier_outputs(finished_run, synthetic_root, tmp_path,
                                                                 monkeypatch, victim):
    import shutil

    from medclipsvd.engine.run import run_experiment
    from medclipsvd.io import OutputError

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = _snapshot(out)
    with disk_full_for(monkeypatch, victim), pytest.raises(OutputError) as info:
        run_experiment(_tiny_spec(synthetic_root, out, force=True))  # replacing the run is asked for
    msg = str(info.value)
    assert "\n" not in msg and victim in msg and "disk is full" in msg and "free" in msg, msg
    after = _snapshot(out)
    assert not [p for p in after if p.endswith(".tmp")], sorted(after)
    assert after[next(p for p in before if p.endswith(victim))] == before[next(p for p in before if p.endswith(victim))]
    assert ".medclipsvd.lock" not in after


def test_full_disk_marks_the_mlflow_run_failed(finished_run, synthetic_root, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from medclipsvd.engine.run import run_experiment
    from medclipsvd.io import OutputError
    from medclipsvd.tracking import make_tracker

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDCLIPSVD_OUTBOX", str(tmp_path / "outbox"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = make_tracker(uri, True)
    with disk_full_for(monkeypatch, "results.json"), pytest.raises(OutputError):
        run_experiment(_tiny_spec(synthetic_root, tmp_path / "run"), tracker=tracker)
    runs = MlflowClient(uri).search_runs([tracker.experiment_id()])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_nan_metrics_are_null_in_json(tmp_path):
    from medclipsvd.engine.evaluator import write_results

    path = write_results(tmp_path / "results.json", {"eval": {"test": {"auroc_ovr": float("nan"), "n": 3}}})
    text = path.read_text()
    assert "NaN" not in text and json.loads(text)["eval"]["test"]["auroc_ovr"] is None


# --- benchmark --resume ---------------------------------------------------------------------------
def test_benchmark_resume_continues_interrupted_run_with_full_history(synthetic_root, tmp_path, monkeypatch):
    from medclipsvd.data import load_dataset
    from medclipsvd.engine.trainer import TrainingInterrupted
    from medclipsvd.protocols.harness import BenchmarkSpec, run_benchmark

    splits = load_dataset("custom", synthetic_root)
    provider = lambda name, root: splits  # noqa: E731
    bench = BenchmarkSpec(suite="BUSI", shots=[2], seeds=[1], methods=["svd"], backbone="tiny-clip",
                          data_root="unused", output=str(tmp_path), device="cpu", max_steps=4)
    steps = {"n": 0}

    @contextlib.contextmanager
    def sigterm_after_two():  # as if SIGTERM arrived during step 2
        def should_stop():
            steps["n"] += 1
            return steps["n"] >= 2
        yield should_stop

    with monkeypatch.context() as m:
        m.setattr(trainer_mod, "_stop_on_signals", sigterm_after_two)
        with pytest.raises(TrainingInterrupted, match="--resume"):
            run_benchmark(bench, provider=provider, log=lambda *_: None)
    logs = []
    bench.resume = True
    run_benchmark(bench, provider=provider, log=logs.append)
    assert any("resuming from its checkpoint at step 2" in line for line in logs), logs
    res = json.loads(next(tmp_path.rglob("results.json")).read_text())
    assert res["train"]["resumed"] and res["train"]["steps"] == 4
    assert len(res["train"]["losses"]) == 4 and all(math.isfinite(x) for x in res["train"]["losses"])


def test_benchmark_cli_accepts_resume():
    from typer.testing import CliRunner

    from medclipsvd.cli.app import app

    result = CliRunner().invoke(app, ["benchmark", "--help"])
    assert result.exit_code == 0 and "--resume" in result.output
