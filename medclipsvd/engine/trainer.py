"""The training loop shared by every trainable method (σ-only SVD, LoRA, full fine-tuning).

Design points (reference doc section 2 and 8):
* AdamW over the method's trainable tensors only; cosine schedule stepped per iteration.
* Cross-entropy on logit_scale · cos(image, class prompt); the prompts are re-encoded with gradients every
  step only while the text tower has trainable tensors, otherwise encoded once.
* The data order and each sample's augmentation are functions of (seed, step, position), not of process
  state, so a resumed run, or a run split over several DDP processes, sees exactly the same batches.
* Checkpoints hold the trainable tensors, optimiser, scheduler, step and RNG states; they are written with
  torch.save of plain tensors/containers and read with weights_only=True.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from medclipsvd.backbones.head import class_logits
from medclipsvd.data.workers import resolve_num_workers
from medclipsvd.device import auto_precision
from medclipsvd.device import autocast as device_autocast
from medclipsvd.device import resolve_device  # noqa: F401  (engine modules import it from here)
from medclipsvd.engine.distributed import DistInfo, dist_info
from medclipsvd.engine.schedule import make_scheduler
from medclipsvd.engine.tracker import NullTracker, Tracker
from medclipsvd.errors import MedClipSVDError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_META = "checkpoint.json"


class TrainingInterrupted(MedClipSVDError):
    """SIGTERM/SIGINT arrived; a checkpoint was written and the run can be resumed with --resume."""


class CheckpointError(MedClipSVDError):
    """A checkpoint cannot be used to resume this run."""


class TrainingDiverged(MedClipSVDError):
    """The loss or a trained tensor became NaN/inf; nothing non-finite was written."""


@dataclass
class TrainSettings:
    lr: float
    total_steps: int
    t_max: int
    weight_decay: float = 0.0
    eta_min: float = 1e-6
    batch_size: int = 32
    seed: int = 1
    device: str = "auto"
    checkpoint_every: int = 0          # 0: only at the end and on a signal
    checkpoint_dir: str | None = None
    resume: bool = False
    num_workers: int | None = None     # None: from the CPU count on CUDA, 0 on CPU
    progress: bool = True
    log_every: int = 1
    stop_after: int | None = None      # testing/debugging: stop (with a checkpoint) after this many steps
    amp: str = "auto"                  # autocast dtype as medclipsvd.device.precision_plan chose it (or auto)

    def fingerprint(self) -> dict:
        """Settings that must match for a resume to continue the same run."""
        keep = ("lr", "total_steps", "t_max", "weight_decay", "eta_min", "batch_size", "seed")
        return {k: getattr(self, k) for k in keep}


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    images_per_second: float
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    precision: str = "fp32"            # the autocast dtype the steps ran in


def autocast_for(device: torch.device, amp: str = "auto"):
    """Autocast for a precision that medclipsvd.device.precision_plan chose: bf16 (CUDA, or a CPU with native
    bf16), fp16 (CUDA; parity mode, like the reference without a GradScaler), fp32 none; auto: the device's
    own choice."""
    return device_autocast(device, amp)


# ---------------------------------------------------------------------------------------------
# Deterministic data order and augmentation
def sample_seed(seed: int, step: int, position: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + position) % (2**31 - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    return torch.randperm(n, generator=g).tolist()


def batch_plan(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Dataset indices of global batch `step`: shuffled epochs, last batch of an epoch may be short
    (the reference's drop_last=False)."""
    per_epoch = max(1, math.ceil(n / batch_size))
    epoch, b = divmod(step, per_epoch)
    perm = epoch_permutation(n, seed, epoch)
    return perm[b * batch_size:(b + 1) * batch_size]


class _PlanSampler(Sampler):
    """Yields, per step, this rank's share of the global batch as (index, augmentation seed) pairs."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, dist: DistInfo):
        self.n, self.bs, self.seed, self.start, self.stop, self.dist = n, batch_size, seed, start, stop, dist

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            idx = batch_plan(self.n, self.bs, self.seed, step)
            pairs = [(i, sample_seed(self.seed, step, pos)) for pos, i in enumerate(idx)]
            yield local_share(pairs, self.dist)


def local_share(items: list, dist: DistInfo) -> list:
    """Contiguous, near-equal share of a global batch for this rank."""
    if dist.world_size == 1:
        return items
    bounds = np.linspace(0, len(items), dist.world_size + 1).round().astype(int)
    return items[bounds[dist.rank]:bounds[dist.rank + 1]]


def _reseed_transform(dataset, seed: int) -> None:
    """Transforms with their own generator (albumentations 2 Compose) ignore the global seeds: reseed them.
    A transform may offer `reseed(seed)`; else an albumentations pipeline's set_random_seed is used."""
    tf = getattr(dataset, "transform", None)
    if tf is None:
        return
    if hasattr(tf, "reseed"):
        tf.reseed(seed)
        return
    pipeline = getattr(tf, "pipeline", None)
    if pipeline is not None and hasattr(pipeline, "set_random_seed"):
        pipeline.set_random_seed(seed)


class _SeededSamples(Dataset):
    """Runs the wrapped dataset's random transform under a per-sample seed."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            py_state, np_state = random.getstate(), np.random.get_state()
            random.seed(seed)
            np.random.seed(seed)
            _reseed_transform(self.base, seed)
            try:
                image, label = self.base[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        return image, int(label)


def _collate(batch):
    if not batch:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels


# ---------------------------------------------------------------------------------------------
class ContrastiveClassifier(nn.Module):
    """logits = logit_scale · normalised image features @ class text features + logit_bias (0 for CLIPs; the
    module DDP wraps)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor, text_features: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
        if text_features is None:
            text_features = self.backbone.encode_text(tokens)
        img = self.backbone.encode_image(images)
        return class_logits(self.backbone.logit_scale, img, text_features.to(img.dtype), self.backbone.logit_bias)


def class_prompts(template: str, classnames: list[str]) -> list[str]:
    return [template.format(c.replace("_", " ")) for c in classnames]


# ---------------------------------------------------------------------------------------------
def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    np_s = state["numpy"]
    np.random.set_state((np_s[0], np_s[1].numpy().astype(np.uint32), np_s[2], np_s[3], np_s[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(directory: Path, params: Mapping[str, torch.Tensor], optimizer, scheduler, step: int,
                    settings: TrainSettings, extra: Mapping | None = None,
                    history: tuple[list[float], list[float]] | None = None) -> Path:
    """Atomic (temp + fsync + rename): a kill or a full disk mid-write leaves the previous checkpoint.
    `history` (losses, lrs) up to `step` is kept so a resumed run reports its whole loss curve."""
    from medclipsvd.io import torch_bytes, write_bytes, write_json

    losses, lrs = history or ([], [])
    state = {
        "params": {k: v.detach().cpu().clone() for k, v in params.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": _rng_state(),
        "history": {"losses": torch.tensor(losses, dtype=torch.float64),
                    "lrs": torch.tensor(lrs, dtype=torch.float64)},
    }
    write_bytes(directory / CHECKPOINT_FILE, torch_bytes(state))
    write_json(directory / CHECKPOINT_META, {"step": step, "settings": settings.fingerprint(), **(extra or {})})
    return directory / CHECKPOINT_FILE


def read_checkpoint_meta(directory: Path) -> dict:
    path = directory / CHECKPOINT_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"--resume: {path} is missing (the checkpoint is incomplete); run without --resume "
                              "to start afresh") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--resume: {path} is damaged ({str(exc).splitlines()[0]}); delete the "
                              f"checkpoint folder {directory} and run without --resume to start afresh") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
        raise CheckpointError(f"--resume: {path} has no 'settings' record; delete the checkpoint folder "
                              f"{directory} and run without --resume to start afresh")
    return meta


def load_checkpoint(directory: Path) -> dict:
    path = directory / CHECKPOINT_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"--resume: no checkpoint at {path}; run without --resume to start afresh") from None
    except Exception as exc:  # corrupted or foreign file
        raise CheckpointError(f"--resume: {path} cannot be read ({exc}); delete it to start afresh") from None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """SIGTERM/SIGINT set a flag checked after each step (only the main thread may install handlers)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: flag["stop"]
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------
def train(backbone: nn.Module, params: Mapping[str, nn.Parameter], train_set: Dataset, classnames: list[str],
          template: str, settings: TrainSettings, *, text_trainable: bool,
          tracker: Tracker | None = None) -> TrainResult:
    """Optimise `params` (already the only tensors with requires_grad) on `train_set` (yielding
    (image tensor, label)). Returns the loss/lr history. Resumes from settings.checkpoint_dir if asked."""
    tracker = tracker or NullTracker()
    dist = dist_info()
    device = resolve_device(settings.device)
    if dist.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    backbone.to(device)
    backbone.train()
    amp = settings.amp if settings.amp != "auto" else auto_precision(device)
    n = len(train_set)
    if n == 0:
        raise MedClipSVDError("the training set is empty: check the data root and the few-shot settings")
    if settings.total_steps < 1:
        raise MedClipSVDError(f"total_steps must be >= 1, got {settings.total_steps}")
    if settings.eta_min > settings.lr:  # every route (API, baselines' own rates), before any step
        from medclipsvd.engine.config import check_lr_floor

        try:
            check_lr_floor(settings.lr, settings.eta_min)
        except ValueError as exc:
            raise MedClipSVDError(str(exc)) from None

    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed)

    plist = list(params.values())
    optimizer = torch.optim.AdamW(plist, lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay)
    scheduler = make_scheduler(optimizer, settings.t_max, settings.eta_min)

    ckpt_dir = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
    start = 0
    if settings.resume:
        if ckpt_dir is None:
            raise CheckpointError("--resume needs a checkpoint directory (the run's --output)")
        state = load_checkpoint(ckpt_dir)  # "no checkpoint" first: the usual mistake
        meta = read_checkpoint_meta(ckpt_dir)
        if meta.get("settings") != settings.fingerprint():
            raise CheckpointError(f"--resume: the checkpoint in {ckpt_dir} was made with settings "
                                  f"{meta.get('settings')}, this run has {settings.fingerprint()}; "
                                  "use the same command line, or a new --output")
        missing = set(params) ^ set(state["params"])
        if missing:
            raise CheckpointError(f"--resume: checkpoint tensors differ from this run's ({sorted(missing)[:3]}...)")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state["params"][k].to(p.device, p.dtype))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
        history = state.get("history") or {}
        prior_losses = [float(x) for x in history.get("losses", torch.zeros(0)).tolist()]
        prior_lrs = [float(x) for x in history.get("lrs", torch.zeros(0)).tolist()]
        if len(prior_losses) != start:  # checkpoint from before histories were kept: keep what there is
            prior_losses, prior_lrs = [], []

    model: nn.Module = ContrastiveClassifier(backbone)
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)

    tokens = backbone.tokenize(class_prompts(template, classnames)).to(device)
    fixed_text = None
    if not text_trainable:
        # Frozen text tower: encode once, in eval mode (no dropout, and no RNG draws that a resume would miss).
        backbone.eval()
        with torch.no_grad(), autocast_for(device, amp):
            fixed_text = backbone.encode_text(tokens).float()
        backbone.train()

    stop_at = settings.total_steps if settings.stop_after is None else min(settings.total_steps, settings.stop_after)
    loader = DataLoader(_SeededSamples(train_set), batch_sampler=_PlanSampler(
        n, settings.batch_size, settings.seed, start, stop_at, dist), num_workers=resolve_num_workers(settings.num_workers, device),
        collate_fn=_collate, generator=torch.Generator().manual_seed(0),
        pin_memory=device.type == "cuda", persistent_workers=False)

    result = TrainResult(steps=start, final_loss=math.nan, seconds=0.0, images_per_second=0.0, precision=amp)
    if settings.resume:
        result.losses, result.lrs = prior_losses, prior_lrs
    last_good = start if settings.resume else None  # step of the newest checkpoint on disk from this run
    show = settings.progress and dist.rank == 0
    bar = None
    if show:
        from medclipsvd.io.progress import progress_bar

        bar = progress_bar(total=settings.total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    images_seen = 0
    step = start
    with _stop_on_signals() as should_stop:
        for images, labels in loader:
            global_bs = len(batch_plan(n, settings.batch_size, settings.seed, step))
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            lr = optimizer.param_groups[0]["lr"]
            with autocast_for(device, amp):
                logits = model(images, text_features=fixed_text, tokens=tokens if fixed_text is None else None)
            # Sum over this rank's share / global batch size: with DDP's gradient averaging (x world size)
            # this equals the mean over the global batch, even when the shares are unequal.
            loss_sum = F.cross_entropy(logits.float(), labels, reduction="sum")
            loss = loss_sum * (dist.world_size / global_bs)
            mean_loss = _global_mean_loss(loss_sum.detach(), global_bs, dist)
            if not math.isfinite(mean_loss):  # same value on every rank (all-reduced): all stop together
                _diverged(bar, f"the loss is {mean_loss}", step + 1, settings, ckpt_dir, last_good)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            images_seen += images.shape[0]
            bad = _first_non_finite(params)
            if bad is not None:
                _diverged(bar, f"the trained tensor {bad} became NaN/inf", step, settings, ckpt_dir, last_good)
            result.losses.append(mean_loss)
            result.lrs.append(lr)
            if dist.rank == 0 and (step % settings.log_every == 0 or step == settings.total_steps):
                tracker.log_metrics({"train/loss": mean_loss, "train/lr": lr}, step=step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            interrupted = should_stop()
            due = settings.checkpoint_every and step % settings.checkpoint_every == 0
            if ckpt_dir is not None and dist.rank == 0 and (due or interrupted or step == stop_at):
                save_checkpoint(ckpt_dir, params, optimizer, scheduler, step, settings,
                                history=(result.losses, result.lrs))
                last_good = step
            if interrupted:
                if bar is not None:
                    bar.close()
                _barrier(dist)
                raise TrainingInterrupted(
                    f"stopped by a signal at step {step}/{settings.total_steps}; checkpoint in {ckpt_dir}. "
                    "Run the same command with --resume to continue." if ckpt_dir else
                    f"stopped by a signal at step {step}/{settings.total_steps} (no checkpoint directory)")
    if bar is not None:
        bar.close()
    _barrier(dist)
    result.steps = step
    result.seconds = time.perf_counter() - t0
    result.final_loss = result.losses[-1] if result.losses else math.nan
    result.images_per_second = images_seen * dist.world_size / result.seconds if result.seconds > 0 else 0.0
    return result


def _first_non_finite(params: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the first trained tensor holding NaN/inf (one fused check on the fast path)."""
    with torch.no_grad():
        flags = torch.stack([torch.isfinite(p).all() for p in params.values()])
        if bool(flags.all()):
            return None
        return list(params)[int((~flags).nonzero()[0])]


def _diverged(bar, what: str, step: int, settings: TrainSettings, ckpt_dir: Path | None,
              last_good: int | None) -> None:
    """Stop training: nothing further is written (no checkpoint, no adapter) for a non-finite state."""
    if bar is not None:
        bar.close()
    if ckpt_dir is not None and last_good is not None:
        where = f"the last good checkpoint is {ckpt_dir} (step {last_good})"
    else:
        where = "no checkpoint was written (add --checkpoint-every N to keep some)"
    raise TrainingDiverged(
        f"training diverged at step {step}/{settings.total_steps}: {what} (learning rate {settings.lr:g}); "
        f"no adapter was written and {where}. Lower the learning rate, e.g. --lr {settings.lr / 10:g}")


def _global_mean_loss(loss_sum: torch.Tensor, global_bs: int, dist: DistInfo) -> float:
    if dist.world_size > 1:
        import torch.distributed as tdist

        loss_sum = loss_sum.clone()
        tdist.all_reduce(loss_sum)
    return float(loss_sum) / global_bs


def _barrier(dist: DistInfo) -> None:
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()


def settings_dict(settings: TrainSettings) -> dict:
    return asdict(settings)
