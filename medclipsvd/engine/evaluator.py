"""Evaluation: merged weights, class text features computed once, image features in batches; metrics,
results JSON and a confusion-matrix plot. Also the linear-probe baseline, which shares feature extraction."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medclipsvd.backbones.head import class_logits
from medclipsvd.data.workers import resolve_num_workers
from medclipsvd.engine.metrics import classification_metrics
from medclipsvd.engine.trainer import autocast_for, class_prompts, resolve_device


def _loader(dataset: Dataset, batch_size: int, num_workers: int | None, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False,
                      num_workers=resolve_num_workers(num_workers, device),
                      pin_memory=device.type == "cuda")


def check_finite_scores(scores, inputs=None, owner=None) -> None:
    """ModelOutputError unless every score (logits or probabilities [N, C]) is finite: a label picked from
    NaN scores is arbitrary, and printing or scoring it would be silently wrong. ``inputs`` (paths, samples
    or arrays) name the first image affected; ``owner[i]`` is the input row ``i`` belongs to (several views
    of one volume), by default row ``i`` itself."""
    from medclipsvd.errors import ModelOutputError

    arr = scores.detach().float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1) if arr.size else np.zeros(0, bool)
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    n = int(owner[row]) if owner is not None else row
    item = inputs[n] if inputs is not None and n < len(inputs) else None
    name = getattr(item, "path", item)
    first = str(name) if isinstance(name, (str, Path)) else f"input {n + 1}"
    raise ModelOutputError(f"the model gave non-finite scores (NaN/inf) for {int(bad.sum())} of {len(arr)} "
                           f"image(s) (first: {first}); its weights are out of range or damaged (an edited or "
                           f"diverged adapter, or broken base weights), so no label can be trusted. Restore the "
                           f"adapter from the run's artefacts, or retrain with a lower --lr.")


@torch.no_grad()
def text_features(backbone, classnames: list[str], template: str, device: torch.device,
                  amp: str = "auto") -> torch.Tensor:
    tokens = backbone.tokenize(class_prompts(template, classnames)).to(device)
    with autocast_for(device, amp):
        return backbone.encode_text(tokens).float()


@torch.no_grad()
def image_features(backbone, dataset: Dataset, device: torch.device, batch_size: int = 64,
                   num_workers: int | None = None, progress: bool = False, amp: str = "auto"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image features [N, D] (float32, CPU) and labels [N]. `amp`: autocast dtype from
    medclipsvd.device.precision_plan (bf16, fp16, fp32 = none; auto: the device's choice)."""
    feats, labels = [], []
    it = _loader(dataset, batch_size, num_workers, device)
    if progress:
        from medclipsvd.io.progress import progress_bar

        it = progress_bar(it, desc="features", unit="batch", leave=False)
    for images, y in it:
        with autocast_for(device, amp):
            f = backbone.encode_image(images.to(device, non_blocking=True))
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(y))
    if not feats:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    feats = torch.cat(feats)
    check_finite_scores(feats, getattr(dataset, "samples", None))  # a linear probe fits on these directly
    return feats, torch.cat(labels).long()


@torch.no_grad()
def predict_probs(backbone, dataset: Dataset, classnames: list[str], template: str, device: str = "auto",
                  batch_size: int = 64, num_workers: int | None = None, progress: bool = False,
                  text_amp: str = "auto", image_amp: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities [N, C] and labels [N] of `dataset` under prompts `template` x `classnames`."""
    dev = resolve_device(device)
    backbone.to(dev).eval()
    txt = text_features(backbone, classnames, template, dev, text_amp)
    img, labels = image_features(backbone, dataset, dev, batch_size, num_workers, progress, image_amp)
    logits = class_logits(backbone.logit_scale, img, txt.cpu(), backbone.logit_bias)  # on the CPU
    check_finite_scores(logits, getattr(dataset, "samples", None))
    return torch.softmax(logits, dim=-1).numpy(), labels.numpy()


def evaluate(backbone, dataset: Dataset, classnames: list[str], template: str, device: str = "auto",
             batch_size: int = 64, num_workers: int | None = None, progress: bool = False,
             precision: str = "auto") -> dict:
    """All metrics of a (merged) backbone on `dataset`, plus the raw predictions for reuse. `precision`: a
    precision medclipsvd.device.precision_plan chose, for text and images."""
    probs, labels = predict_probs(backbone, dataset, classnames, template, device, batch_size, num_workers,
                                  progress, text_amp=precision, image_amp=precision)
    return classification_metrics(probs, labels, classnames)


# ---------------------------------------------------------------------------------------------
def fit_linear_probe(train_feats: np.ndarray, train_labels: np.ndarray, val_feats: np.ndarray | None = None,
                     val_labels: np.ndarray | None = None, seed: int = 1):
    """Logistic regression on frozen, L2-normalised image features. C is chosen on the validation split
    when there is one (as CoOp's linear probe does), otherwise C = 1."""
    from sklearn.linear_model import LogisticRegression

    def fit(c: float):
        clf = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return clf.fit(train_feats, train_labels)

    if val_feats is None or len(val_feats) == 0 or len(np.unique(train_labels)) < 2:
        return fit(1.0) if len(np.unique(train_labels)) >= 2 else _ConstantClassifier(train_labels)
    best, best_acc = None, -1.0
    for c in (0.01, 0.1, 1.0, 10.0, 100.0):
        clf = fit(c)
        acc = float((clf.predict(val_feats) == val_labels).mean())
        if acc > best_acc:
            best, best_acc = clf, acc
    return best


class _ConstantClassifier:
    """One training class only: always predict it (LogisticRegression refuses this case)."""

    def __init__(self, labels: np.ndarray):
        self.classes_ = np.unique(labels)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.ones((len(x), 1))


def probe_probs(clf, feats: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities over all n_classes (classes the probe never saw get 0)."""
    p = clf.predict_proba(feats)
    full = np.zeros((len(feats), n_classes))
    full[:, clf.classes_.astype(int)] = p
    return full


# ---------------------------------------------------------------------------------------------
def write_results(path: str | Path, results: dict) -> Path:
    """Strict JSON written atomically: NaN metrics (e.g. AUROC with one class present) become null."""
    from medclipsvd.io import write_json

    return write_json(path, results)
