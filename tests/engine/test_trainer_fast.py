"""The training loop (engine/trainer.py `train`) on the toy backbone of tests/engine/toy.py: tenths of a second
per run, so mutation testing of the loss and the loop runs these.

The central check replays the run by hand: the same batches (batch_plan), logits = logit_scale · img @ txtᵀ,
cross-entropy written out as logsumexp − target logit, torch's own AdamW and CosineAnnealingLR; the trainer's
reported losses, learning rates and trained σ must match it step by step."""
import math
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyBackbone, ToyImages  # noqa: E402

from medclipsvd.engine import trainer  # noqa: E402
from medclipsvd.engine.distributed import DistInfo  # noqa: E402
from medclipsvd.engine.trainer import (CheckpointError, TrainingDiverged, TrainingInterrupted,  # noqa: E402
                                       TrainSettings, batch_plan, train)
from medclipsvd.errors import MedClipSVDError  # noqa: E402

CLASSES = ["benign", "malignant", "normal"]
TEMPLATE = "a photo of a {} lesion."


class FixedImages(Dataset):
    """Class pattern + fixed per-item noise: no randomness at fetch time, so a hand replay sees the same pixels.
    `poison_from`: items fetched after that many fetches are NaN (a diverging input)."""

    def __init__(self, n: int = 9, poison_from: int | None = None, on_fetch=None):
        g = torch.Generator().manual_seed(3)
        protos = torch.randn(len(CLASSES), 3, 8, 8, generator=g)
        self.labels = [i % len(CLASSES) for i in range(n)]
        self.images = [protos[y] + 0.7 * torch.randn(3, 8, 8, generator=g) for y in self.labels]
        self.fetches, self.poison_from, self.on_fetch = 0, poison_from, on_fetch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.fetches += 1
        if self.on_fetch is not None:
            self.on_fetch(self.fetches)
        image = self.images[i]
        if self.poison_from is not None and self.fetches > self.poison_from:
            image = image * float("nan")
        return image, self.labels[i]


def _settings(**kw) -> TrainSettings:
    base = dict(lr=0.05, total_steps=7, t_max=7, weight_decay=0.05, eta_min=1e-4, batch_size=4, seed=5,
                device="cpu", progress=False)
    return TrainSettings(**{**base, **kw})


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(len(labels)), labels]).mean()


def _replay(data: FixedImages, s: TrainSettings):
    """The run by hand: frozen text features (eval mode, encoded once), image σ trained by AdamW under torch's
    cosine annealing. Returns (losses, lrs, final image σ)."""
    bb = ToyBackbone()
    bb.eval()
    with torch.no_grad():
        text = bb.encode_text(bb.tokenize([TEMPLATE.format(c) for c in CLASSES]))
    opt = torch.optim.AdamW([bb.img_sigma], lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.t_max, eta_min=s.eta_min)
    losses, lrs = [], []
    for step in range(s.total_steps):
        idx = batch_plan(len(data), s.batch_size, s.seed, step)
        images = torch.stack([data.images[i] for i in idx])
        labels = torch.tensor([data.labels[i] for i in idx])
        loss = _cross_entropy(10.0 * bb.encode_image(images) @ text.T, labels)
        losses.append(float(loss.detach()))
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return losses, lrs, bb.img_sigma.detach()


def _run(data=None, settings=None, text_trainable=False, bb=None, **kw):
    bb = bb or ToyBackbone()
    params = bb.trainable() if text_trainable else {"img_sigma": bb.img_sigma}
    result = train(bb, params, FixedImages() if data is None else data, CLASSES, TEMPLATE, settings or _settings(),
                   text_trainable=text_trainable, **kw)
    return bb, result


def test_losses_lrs_and_sigma_match_a_hand_written_adamw_run():
    data = FixedImages(n=9)  # batches of 4, 4, 1: the short last batch of an epoch counts with its own size
    s = _settings()
    bb, result = _run(data, s)
    losses, lrs, sigma = _replay(FixedImages(n=9), s)
    assert result.steps == 7 and len(result.losses) == 7 and result.final_loss == result.losses[-1]
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.lrs, lrs, rtol=1e-9)
    cosine = [1e-4 + (0.05 - 1e-4) * (1 + math.cos(math.pi * k / 7)) / 2 for k in range(7)]
    np.testing.assert_allclose(result.lrs, cosine, rtol=1e-9)
    torch.testing.assert_close(bb.img_sigma.detach(), sigma, rtol=1e-5, atol=1e-6)
    assert not torch.equal(sigma, ToyBackbone().img_sigma.detach())  # the replay did move σ


def test_the_gradient_is_that_of_the_global_batch_mean(monkeypatch):
    # AdamW's step is blind to a constant factor on the loss, so the replay above cannot see one: the gradient
    # handed to the optimiser is compared with autograd's gradient of the batch-mean cross-entropy
    grads = []

    class SpyAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            grads.append(self.param_groups[0]["params"][0].grad.detach().clone())
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    data = FixedImages(n=9)
    s = _settings(total_steps=3)
    _run(data, s)
    bb = ToyBackbone()
    bb.eval()
    with torch.no_grad():
        text = bb.encode_text(bb.tokenize([TEMPLATE.format(c) for c in CLASSES]))
    idx = batch_plan(9, 4, s.seed, 0)
    images = torch.stack([data.images[i] for i in idx])
    loss = _cross_entropy(10.0 * bb.encode_image(images) @ text.T, torch.tensor([data.labels[i] for i in idx]))
    (expected,) = torch.autograd.grad(loss, [bb.img_sigma])
    assert len(grads) == 3
    torch.testing.assert_close(grads[0], expected, rtol=1e-5, atol=1e-7)


def test_a_run_stopped_before_its_first_step():
    _, result = _run(settings=_settings(stop_after=0))
    assert result.steps == 0 and result.losses == [] and math.isnan(result.final_loss)


def test_the_first_loss_is_the_cross_entropy_of_the_scaled_cosine_logits():
    data = FixedImages(n=6)
    _, result = _run(data, _settings(batch_size=6, total_steps=1, t_max=1))
    bb = ToyBackbone()
    bb.eval()
    with torch.no_grad():
        text = bb.encode_text(bb.tokenize([TEMPLATE.format(c) for c in CLASSES]))
        img = bb.encode_image(torch.stack(data.images))
        logits = bb.logit_scale * img @ text.T
    expected = _cross_entropy(logits, torch.tensor(data.labels))
    assert result.losses[0] == pytest.approx(float(expected), rel=1e-5)


def test_a_short_run_lowers_the_loss():
    # full batches of fixed images: every step sees the same 9 images, so the loss is one function of σ
    _, result = _run(FixedImages(n=9), _settings(lr=0.1, total_steps=10, t_max=10, batch_size=9, weight_decay=0.0))
    # measured: 1.874 -> 1.802, falling by 0.001 to 0.013 at every step
    assert all(b < a for a, b in zip(result.losses, result.losses[1:])), result.losses
    assert result.losses[-1] < result.losses[0] - 0.04, result.losses


def test_trainable_text_is_trained():
    bb, result = _run(ToyImages(n_per_class=2), _settings(total_steps=3), text_trainable=True)
    fresh = ToyBackbone()
    for name in ("img_sigma", "txt_sigma"):
        assert not torch.equal(getattr(bb, name).detach(), getattr(fresh, name).detach()), name


def test_only_the_given_tensors_are_trained():
    bb, _ = _run()
    fresh = ToyBackbone()
    assert not torch.equal(bb.img_sigma.detach(), fresh.img_sigma.detach())
    torch.testing.assert_close(bb.txt_sigma.detach(), fresh.txt_sigma.detach(), rtol=0, atol=0)


def test_frozen_text_is_encoded_once_in_eval_mode_trainable_text_every_step():
    for text_trainable, expected in ((False, [False]), (True, [True] * 4)):
        bb = ToyBackbone()
        modes, image_modes = [], []
        enc_text, enc_image = bb.encode_text, bb.encode_image
        bb.encode_text = lambda tokens: modes.append(bb.training) or enc_text(tokens)
        bb.encode_image = lambda x: image_modes.append(bb.training) or enc_image(x)
        _run(settings=_settings(total_steps=4), text_trainable=text_trainable, bb=bb)
        assert modes == expected and image_modes == [True] * 4


def test_every_global_rng_is_seeded_from_the_settings():
    runs = []
    for prior in (1, 2):
        torch.manual_seed(prior)
        random.seed(prior)
        np.random.seed(prior)
        _, result = _run(ToyImages(n_per_class=2), _settings(total_steps=3), text_trainable=True)  # dropout draws
        runs.append(result.losses)
    assert runs[0] == runs[1]
    _, result = _run(FixedImages(), _settings(seed=11, total_steps=2))  # frozen text: no global draws after seeding
    assert random.random() == random.Random(11).random()
    assert np.random.random() == np.random.RandomState(11).random_sample()
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(11)))


@pytest.mark.parametrize("data, kw, message", [
    (FixedImages(n=0), {}, "the training set is empty: check the data root and the few-shot settings"),
    (FixedImages(), {"total_steps": 0}, "total_steps must be >= 1, got 0"),
    (FixedImages(), {"total_steps": -2}, "total_steps must be >= 1, got -2"),
    (FixedImages(), {"lr": 1e-3, "eta_min": 1e-2},
     "eta_min 0.01 is larger than lr 0.001: the learning rate would climb from 0.001 to 0.01 instead of decaying; "
     "set eta_min below the learning rate (e.g. eta_min: 1e-6) or raise lr"),
])
def test_settings_that_cannot_train_are_refused(data, kw, message):
    with pytest.raises(MedClipSVDError) as info:
        _run(data, _settings(**kw))
    assert str(info.value) == message and type(info.value) is MedClipSVDError


def test_an_lr_equal_to_its_floor_trains():
    _, result = _run(settings=_settings(lr=1e-3, eta_min=1e-3, total_steps=2))
    assert result.lrs == [1e-3, 1e-3]


class _Tracker:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, dict(metrics)))


def test_metrics_are_logged_every_log_every_steps_and_at_the_end():
    tracker = _Tracker()
    _, result = _run(settings=_settings(log_every=3), tracker=tracker)
    assert tracker.logged == [(k, {"train/loss": result.losses[k - 1], "train/lr": result.lrs[k - 1]})
                              for k in (3, 6, 7)]
    tracker = _Tracker()
    _run(settings=_settings(total_steps=2), tracker=tracker)
    assert [s for s, _ in tracker.logged] == [1, 2]


def test_timing_fields():
    import time

    t0 = time.perf_counter()
    _, result = _run(FixedImages(n=9), _settings(total_steps=4))
    assert 0 < result.seconds <= time.perf_counter() - t0
    assert result.images_per_second * result.seconds == pytest.approx(4 + 4 + 1 + 4, rel=1e-9)  # 9 per epoch


def test_progress_bar(monkeypatch):
    import medclipsvd.io.progress as progress

    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.n, self.postfix, self.closed = kw, 0, [], False
            bars.append(self)

        def update(self, k):
            self.n += k

        def set_postfix(self, **kw):
            self.postfix.append(kw)

        def close(self):
            self.closed = True

    monkeypatch.setattr(progress, "progress_bar", lambda **kw: Bar(**kw))
    _, result = _run(settings=_settings(total_steps=3, progress=True))
    (bar,) = bars
    assert bar.kw == {"total": 3, "initial": 0, "desc": "train", "unit": "step", "dynamic_ncols": True}
    assert bar.n == 3 and bar.closed
    assert bar.postfix == [{"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"} for loss, lr in zip(result.losses, result.lrs)]
    _run(settings=_settings(total_steps=2, progress=False))
    assert len(bars) == 1


# --- checkpoints and resume ------------------------------------------------------------------------
def _saves(monkeypatch):
    steps = []
    real = trainer.save_checkpoint

    def spy(directory, params, optimizer, scheduler, step, settings, extra=None, history=None):
        steps.append((step, list(history[0]), list(history[1])))
        return real(directory, params, optimizer, scheduler, step, settings, extra=extra, history=history)

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    return steps


def test_checkpoints_every_n_steps_at_the_end_and_nowhere_without_a_folder(tmp_path, monkeypatch):
    saved = _saves(monkeypatch)
    _, result = _run(settings=_settings(total_steps=5, checkpoint_every=2, checkpoint_dir=str(tmp_path)))
    assert [s for s, _, _ in saved] == [2, 4, 5]
    assert all(losses == result.losses[:s] and lrs == result.lrs[:s] for s, losses, lrs in saved)
    saved.clear()
    _run(settings=_settings(total_steps=5, checkpoint_dir=str(tmp_path / "b")))
    assert [s for s, _, _ in saved] == [5]
    saved.clear()
    _run(settings=_settings(total_steps=5, checkpoint_every=2))
    assert saved == []


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    s = _settings(total_steps=6, t_max=6)
    straight_bb, straight = _run(ToyImages(n_per_class=3), s, text_trainable=True)
    first_bb, first = _run(ToyImages(n_per_class=3), _settings(total_steps=6, t_max=6, stop_after=2,
                                                                checkpoint_dir=str(tmp_path)), text_trainable=True)
    assert first.steps == 2 and first.losses == straight.losses[:2]
    assert (tmp_path / "checkpoint.pt").is_file()

    import medclipsvd.io.progress as progress

    bars = []
    monkeypatch.setattr(progress, "progress_bar", lambda **kw: bars.append(kw) or _NullBar())
    bb, resumed = _run(ToyImages(n_per_class=3), _settings(total_steps=6, t_max=6, checkpoint_dir=str(tmp_path),
                                                           resume=True, progress=True), text_trainable=True)
    assert bars[0]["initial"] == 2 and bars[0]["total"] == 6
    assert resumed.steps == 6 and len(resumed.losses) == 6
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed.lrs, straight.lrs, rtol=1e-12)
    for name in ("img_sigma", "txt_sigma"):
        torch.testing.assert_close(getattr(bb, name).detach(), getattr(straight_bb, name).detach(),
                                   rtol=1e-6, atol=1e-7)


class _NullBar:
    def update(self, k):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("history", ["none", "short"])
def test_resume_of_a_checkpoint_without_a_whole_history_reports_the_new_steps_only(tmp_path, history):
    _run(settings=_settings(total_steps=4, stop_after=2, checkpoint_dir=str(tmp_path)))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    if history == "none":
        del state["history"]
    else:  # one loss for two steps: not this checkpoint's history
        state["history"] = {k: v[:1] for k, v in state["history"].items()}
    torch.save(state, tmp_path / "checkpoint.pt")
    _, result = _run(settings=_settings(total_steps=4, checkpoint_dir=str(tmp_path), resume=True))
    assert result.steps == 4 and len(result.losses) == len(result.lrs) == 2


def test_resume_refusals(tmp_path):
    with pytest.raises(CheckpointError) as info:
        _run(settings=_settings(resume=True))
    assert str(info.value) == "--resume needs a checkpoint directory (the run's --output)"
    _run(settings=_settings(total_steps=4, stop_after=2, checkpoint_dir=str(tmp_path)))
    with pytest.raises(CheckpointError) as info:
        _run(settings=_settings(total_steps=4, lr=0.01, checkpoint_dir=str(tmp_path), resume=True))
    fp = _settings(total_steps=4).fingerprint()
    assert str(info.value) == (f"--resume: the checkpoint in {tmp_path} was made with settings {fp}, this run has "
                               f"{ {**fp, 'lr': 0.01} }; use the same command line, or a new --output")
    with pytest.raises(CheckpointError) as info:
        _run(settings=_settings(total_steps=4, checkpoint_dir=str(tmp_path), resume=True), text_trainable=True)
    assert str(info.value) == "--resume: checkpoint tensors differ from this run's (['txt_sigma']...)"
    bb = ToyBackbone()
    extra = {f"unused_{k}": torch.nn.Parameter(torch.zeros(2)) for k in "abcde"}  # named in sorted order, 3 shown
    with pytest.raises(CheckpointError) as info:
        train(bb, {"img_sigma": bb.img_sigma, **extra}, FixedImages(), CLASSES, TEMPLATE,
              _settings(total_steps=4, checkpoint_dir=str(tmp_path), resume=True), text_trainable=False)
    assert str(info.value) == ("--resume: checkpoint tensors differ from this run's (['unused_a', 'unused_b', "
                               "'unused_c']...)")


# --- divergence and signals -------------------------------------------------------------------------
def test_a_non_finite_loss_stops_before_any_step_or_checkpoint(tmp_path):
    data = FixedImages(n=4, poison_from=8)  # full batches of 4: the third step's inputs are NaN
    bb = ToyBackbone()
    with pytest.raises(TrainingDiverged) as info:
        _run(data, _settings(batch_size=4, lr=0.02, checkpoint_every=2, checkpoint_dir=str(tmp_path)), bb=bb)
    assert str(info.value) == (
        f"training diverged at step 3/7: the loss is nan (learning rate 0.02); no adapter was written and the last "
        f"good checkpoint is {tmp_path} (step 2). Lower the learning rate, e.g. --lr 0.002")
    assert torch.isfinite(bb.img_sigma).all()  # the NaN batch made no step
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2
    with pytest.raises(TrainingDiverged) as info:
        _run(FixedImages(n=4, poison_from=0), _settings(batch_size=4))
    assert str(info.value) == (
        "training diverged at step 1/7: the loss is nan (learning rate 0.05); no adapter was written and no checkpoint "
        "was written (add --checkpoint-every N to keep some). Lower the learning rate, e.g. --lr 0.005")


def test_a_resumed_run_that_diverges_names_the_checkpoint_it_started_from(tmp_path):
    _run(FixedImages(n=4), _settings(batch_size=4, total_steps=5, stop_after=2, checkpoint_dir=str(tmp_path)))
    with pytest.raises(TrainingDiverged, match=rf"the last good checkpoint is {tmp_path} \(step 2\)"):
        _run(FixedImages(n=4, poison_from=0), _settings(batch_size=4, total_steps=5, checkpoint_dir=str(tmp_path),
                                                         resume=True))


def test_a_non_finite_trained_tensor_stops_the_run(tmp_path):
    # weight decay multiplies σ (about 5) by 1 - lr·wd ≈ -1e38, which overflows float32: σ is inf after step 1
    with pytest.raises(TrainingDiverged) as info:
        _run(settings=_settings(lr=1e37, weight_decay=10.0, checkpoint_dir=str(tmp_path)))
    assert str(info.value) == (  # a checkpoint folder without a checkpoint from this run: none is named
        "training diverged at step 1/7: the trained tensor img_sigma became NaN/inf (learning rate 1e+37); no adapter "
        "was written and no checkpoint was written (add --checkpoint-every N to keep some). Lower the learning rate, "
        "e.g. --lr 1e+36")
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_signal_stops_after_the_step_with_a_checkpoint(tmp_path, monkeypatch):
    saved = _saves(monkeypatch)
    handler = signal.getsignal(signal.SIGTERM)
    tracker = _Tracker()
    data = FixedImages(n=4, on_fetch=lambda k: k == 5 and signal.raise_signal(signal.SIGTERM))  # during step 2
    with pytest.raises(TrainingInterrupted) as info:
        _run(data, _settings(batch_size=4, total_steps=5, checkpoint_dir=str(tmp_path)), tracker=tracker)
    assert str(info.value) == (f"stopped by a signal at step 2/5; checkpoint in {tmp_path}. Run the same command "
                               "with --resume to continue.")
    assert [s for s, _, _ in saved] == [2] and [s for s, _ in tracker.logged] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is handler
    data = FixedImages(n=4, on_fetch=lambda k: k == 1 and signal.raise_signal(signal.SIGINT))
    with pytest.raises(TrainingInterrupted) as info:
        _run(data, _settings(batch_size=4, total_steps=5))
    assert str(info.value) == "stopped by a signal at step 1/5 (no checkpoint directory)"


def test_only_rank_zero_writes_and_logs(tmp_path, monkeypatch):
    import medclipsvd.io.progress as progress

    bars = []
    monkeypatch.setattr(progress, "progress_bar", lambda **kw: bars.append(kw) or _NullBar())
    monkeypatch.setattr(trainer, "dist_info", lambda: DistInfo(rank=1, world_size=1))
    tracker = _Tracker()
    _, result = _run(settings=_settings(total_steps=3, checkpoint_dir=str(tmp_path), progress=True), tracker=tracker)
    assert result.steps == 3 and tracker.logged == [] and bars == [] and not (tmp_path / "checkpoint.pt").exists()


def test_global_mean_loss_of_one_process():
    assert trainer._global_mean_loss(torch.tensor(6.0), 4, DistInfo()) == 1.5


def test_global_mean_loss_sums_every_ranks_share(monkeypatch):
    # two ranks: the all-reduce (here: the other rank's share of 3.0 added) makes the sum over the global batch
    import torch.distributed as tdist

    def all_reduce(t):
        t.add_(3.0)

    monkeypatch.setattr(tdist, "all_reduce", all_reduce)
    mine = torch.tensor(5.0)
    assert trainer._global_mean_loss(mine, 4, DistInfo(rank=1, world_size=2, local_rank=1)) == 2.0
    assert float(mine) == 5.0  # this rank's own sum is left as it was (it is the one backpropagated)


def test_rank_zero_of_two_computes_its_share(monkeypatch):
    """Rank 0 of a 2-process run, with the collectives simulated in this process: it wraps the classifier in
    DDP (no device ids on the CPU, buffers not broadcast), trains on the first half of each global batch, scales
    its summed loss by world size / global batch (DDP then averages over the ranks), and reports the all-reduced
    mean. The real 2-process run is tests/engine/test_resume_ddp.py (subprocesses, out of mutation testing's
    reach)."""
    import torch.distributed as tdist
    import torch.nn.parallel

    wrapped, reduced, grads = [], [], []

    class FakeDDP(torch.nn.Module):  # forwards as DDP does; the gradient averaging is the other rank's business
        def __init__(self, module, **kwargs):
            super().__init__()
            self.module = module
            wrapped.append((type(module).__name__, kwargs))

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    class SpyAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            grads.append(self.param_groups[0]["params"][0].grad.detach().clone())
            return super().step(closure)

    def all_reduce(t):  # the other rank's loss sum is 1.0
        reduced.append(float(t))
        t.add_(1.0)

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    monkeypatch.setattr(tdist, "all_reduce", all_reduce)
    monkeypatch.setattr(tdist, "barrier", lambda: None)
    monkeypatch.setattr(trainer, "dist_info", lambda: DistInfo(rank=0, world_size=2, local_rank=0))
    data = FixedImages(n=8)
    s = _settings(total_steps=2)
    _, result = _run(data, s)
    assert wrapped == [("ContrastiveClassifier", {"device_ids": None, "broadcast_buffers": False})]

    bb = ToyBackbone()
    bb.eval()
    with torch.no_grad():
        text = bb.encode_text(bb.tokenize([TEMPLATE.format(c) for c in CLASSES]))
    idx = batch_plan(8, 4, s.seed, 0)[:2]  # the first half of the first global batch
    logits = 10.0 * bb.encode_image(torch.stack([data.images[i] for i in idx])) @ text.T
    labels = torch.tensor([data.labels[i] for i in idx])
    loss_sum = (torch.logsumexp(logits, dim=1) - logits[torch.arange(2), labels]).sum()
    (expected_grad,) = torch.autograd.grad(loss_sum * 2 / 4, [bb.img_sigma])
    assert reduced[0] == pytest.approx(float(loss_sum.detach()), rel=1e-5)
    assert result.losses[0] == pytest.approx((float(loss_sum.detach()) + 1.0) / 4, rel=1e-5)
    torch.testing.assert_close(grads[0], expected_grad, rtol=1e-5, atol=1e-7)
    assert len(reduced) == len(grads) == 2
    # throughput counts both ranks' images: 2 steps x 2 ranks x 2 images
    assert result.images_per_second * result.seconds == pytest.approx(8, rel=1e-9)


def test_the_loader_is_built_from_the_settings(monkeypatch):
    """The worker count asked for (results do not depend on it: every sample is seeded by position), the
    trainer's own collate (it returns empty tensors for an empty share), no pinned memory on the CPU and no
    persistent workers (each run builds its own loader)."""
    built = []
    real = trainer.DataLoader

    def loader(dataset, **kwargs):
        built.append(kwargs)
        return real(dataset, **{**kwargs, "num_workers": 0})  # no worker processes in this test

    monkeypatch.setattr(trainer, "DataLoader", loader)
    _, result = _run(settings=_settings(total_steps=2, num_workers=2))
    (kw,) = built
    assert (kw["num_workers"], kw["collate_fn"], kw["pin_memory"], kw["persistent_workers"]) == (
        2, trainer._collate, False, False)
    assert result.steps == 2


def _inf_gradient_at(bb, step: int):
    """From the given step on, the image σ's gradient is inf: AdamW's update turns σ into NaN while the loss of
    that step is still finite (a divergence seen in the trained tensor, not in the loss)."""
    calls = [0]

    def hook(g):
        calls[0] += 1
        return g * float("inf") if calls[0] >= step else g

    bb.img_sigma.register_hook(hook)


def test_a_tensor_that_diverges_after_a_checkpoint_names_it(tmp_path):
    bb = ToyBackbone()
    _inf_gradient_at(bb, 3)
    with pytest.raises(TrainingDiverged) as info:
        _run(FixedImages(n=4), _settings(batch_size=4, checkpoint_every=2, checkpoint_dir=str(tmp_path)), bb=bb)
    assert str(info.value) == (
        f"training diverged at step 3/7: the trained tensor img_sigma became NaN/inf (learning rate 0.05); no adapter "
        f"was written and the last good checkpoint is {tmp_path} (step 2). Lower the learning rate, e.g. --lr 0.005")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


def test_the_progress_bar_is_closed_when_training_diverges(monkeypatch):
    import medclipsvd.io.progress as progress

    bars = []

    class Bar(_NullBar):
        closed = False

        def close(self):
            self.closed = True

    monkeypatch.setattr(progress, "progress_bar", lambda **kw: bars.append(Bar()) or bars[-1])
    with pytest.raises(TrainingDiverged):
        _run(FixedImages(n=4, poison_from=4), _settings(batch_size=4, progress=True))  # the loss, at step 2
    bb = ToyBackbone()
    _inf_gradient_at(bb, 2)
    with pytest.raises(TrainingDiverged):
        _run(FixedImages(n=4), _settings(batch_size=4, progress=True), bb=bb)  # the tensor, at step 2
    assert len(bars) == 2 and all(bar.closed for bar in bars)
