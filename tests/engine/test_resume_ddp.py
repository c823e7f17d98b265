"""Resume after SIGKILL / SIGTERM gives the same σ as an uninterrupted run; 2-process gloo DDP gives the
same σ as 1 process with the same global batch. Subprocesses run the toy backbone (tests/engine/toy.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("train_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _run(out: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), str(out), *extra], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _final(out: Path) -> dict:
    return torch.load(out / "final.pt", weights_only=True)


def _wait_for_step(meta: Path, step: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"worker ended before step {step}: {proc.stderr.read()}")
        try:
            s = json.loads(meta.read_text())["step"]
            if s >= step:
                return s
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    pytest.fail("worker too slow")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    r = _run(out, "--steps", "16")
    assert r.returncode == 0, r.stderr
    return _final(out)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_kill_matches_uninterrupted(tmp_path, uninterrupted, sig):
    proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), "--steps", "16", "--sleep", "0.03"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reached = _wait_for_step(tmp_path / "ckpt" / "checkpoint.json", 5, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0  # it did not finish
    if sig == signal.SIGTERM:  # graceful: a checkpoint at the step it stopped, and a message saying --resume
        assert "--resume" in proc.stderr.read()
    stopped = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["step"]
    assert reached <= stopped < 16
    assert not (tmp_path / "final.pt").exists()
    r = _run(tmp_path, "--steps", "16", "--resume")
    assert r.returncode == 0, r.stderr
    resumed = _final(tmp_path)
    for k in ("img_sigma", "txt_sigma"):
        assert torch.equal(resumed[k], uninterrupted[k]), k
    # the checkpoint carries the loss history, so the resumed run reports the whole curve (steps before the
    # interruption from the checkpoint, the rest computed again), equal to the uninterrupted one
    assert len(resumed["losses"]) == 16
    assert torch.equal(resumed["losses"], uninterrupted["losses"])


def test_resume_with_other_settings_is_refused(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from toy import ToyBackbone, ToyImages

    from medclipsvd.engine.trainer import CheckpointError, TrainSettings, train

    def settings(steps, resume):
        return TrainSettings(lr=0.05, total_steps=steps, t_max=steps, batch_size=8, device="cpu", progress=False,
                             checkpoint_dir=str(tmp_path), resume=resume)

    bb = ToyBackbone()
    train(bb, bb.trainable(), ToyImages(), ["a", "b", "c"], "{}", settings(2, False), text_trainable=True)
    with pytest.raises(CheckpointError, match="same command line"):
        train(bb, bb.trainable(), ToyImages(), ["a", "b", "c"], "{}", settings(3, True), text_trainable=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(bb, bb.trainable(), ToyImages(), ["a", "b", "c"], "{}",
              TrainSettings(lr=0.05, total_steps=2, t_max=2, device="cpu", progress=False,
                            checkpoint_dir=str(tmp_path / "empty"), resume=True), text_trainable=True)


def test_ddp_two_processes_equal_one(tmp_path, uninterrupted):
    # uninterrupted: 1 process, global batch 8; here 2 gloo ranks x 4 of the same global batch of 8
    import socket

    with socket.socket() as sock:  # a free port: other test runs may share this machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(WORKER), str(tmp_path), "--steps", "16", "--checkpoint-every", "0"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = _final(tmp_path)
    for k in ("img_sigma", "txt_sigma"):
        assert torch.allclose(ddp[k], uninterrupted[k], atol=1e-5, rtol=1e-5), (k, (ddp[k] - uninterrupted[k]).abs().max())
    assert not torch.equal(uninterrupted["img_sigma"], ToySigma0.img())  # training moved σ at all


class ToySigma0:
    @staticmethod
    def img():
        sys.path.insert(0, str(Path(__file__).parent))
        from toy import ToyBackbone

        return ToyBackbone().img_sigma.detach()


# --- the same on tiny-clip's real σ layers (open_clip ViT + text transformer, σ of q k v o fc1 fc2) ----------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(WORKER), str(out), *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)


def test_ddp_resume_on_tiny_clip_sigma_equals_one_uninterrupted_process(tmp_path):
    """1 process x 4 steps (global batch 4) == 2 gloo ranks x 2 images, stopped after step 2 with a checkpoint
    and resumed under DDP for steps 3-4: the same σ for all 72 matrices and the same loss curve."""
    common = ["--model", "tiny-clip", "--steps", "4", "--batch-size", "4", "--checkpoint-every", "0"]
    r = _run(tmp_path / "one", *common, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one = _final(tmp_path / "one")

    first = _torchrun(tmp_path / "ddp", *common, "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "ckpt" / "checkpoint.json").read_text())["step"] == 2
    halfway = _final(tmp_path / "ddp")
    assert len(halfway["losses"]) == 2
    resumed = _torchrun(tmp_path / "ddp", *common, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ddp = _final(tmp_path / "ddp")

    sigmas = [k for k in one if k != "losses"]
    assert len(sigmas) == 72 and set(ddp) == set(one)
    # AdamW scales every update to about lr (0.01) whatever the gradient's size, so σ whose gradient is near
    # zero turn the all-reduce's rounding into differences of ~1e-5; a lost optimiser state, another batch
    # order or a missed step changes σ by the order of lr
    worst = max(sigmas, key=lambda k: float((ddp[k] - one[k]).abs().max()))
    assert torch.allclose(ddp[worst], one[worst], atol=2e-4, rtol=0), (worst, (ddp[worst] - one[worst]).abs().max())
    assert torch.allclose(ddp["losses"], one["losses"], atol=1e-5, rtol=1e-5), (ddp["losses"], one["losses"])
    assert torch.equal(ddp["losses"][:2], halfway["losses"])  # steps 1-2 come from the checkpoint's history

    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import adapt, sigma_parameters

    start = sigma_parameters(adapt(load_backbone("tiny-clip"), "paper"))
    moved = max(float((one[k] - start[k].detach()).abs().max()) for k in sigmas)
    assert moved > 1e-3  # training changed σ: the equality above is not between two untrained models
