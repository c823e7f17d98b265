"""Classification metrics from predicted probabilities: the paper's top-1 accuracy plus the figures
a clinical user needs (balanced accuracy, macro-F1, one-vs-rest AUROC, calibration, confusion)."""
from __future__ import annotations

import math
import warnings

import numpy as np

# scikit-learn (about 1.3 s of CPU to import) is imported inside the functions: serving a registered model
# (`medclipsvd predict`) imports the evaluator for its prompt encoding but computes no metrics.


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Equal-width confidence bins; |accuracy - confidence| weighted by the bin's share of samples."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def ovr_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in `labels`; NaN when fewer than two are."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(labels)
    if len(present) < 2:
        return math.nan
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    return float(np.mean(aucs))


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classnames: list[str],
                           ci_resamples: int | None = None, ci_seed: int = 0) -> dict:
    """All metrics as plain Python values (JSON-ready). Percentages for accuracies, like the paper.
    `ci95`: stratified bootstrap 95 % intervals of accuracy, balanced accuracy, macro-F1 and AUROC
    (engine/clinical.py; `ci_resamples` 0 skips them); `per_class`: sensitivity, specificity, PPV and NPV of
    each class with their Wilson 95 % intervals (`per_class_ci` names the method, and flags a small sample);
    `operating_points`: thresholds for fixed sensitivity/specificity (two classes only)."""
    from medclipsvd.engine.clinical import (CI_LEVEL, N_RESAMPLES, RATE_METHOD, bootstrap_ci, per_class_rates,
                                            small_sample_note)
    from medclipsvd.engine.operating_points import operating_points
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} disagree")
    n_classes = len(classnames)
    preds = probs.argmax(axis=1)
    all_labels = list(range(n_classes))
    cm = confusion_matrix(labels, preds, labels=all_labels)
    support = cm.sum(axis=1)
    per_class = {name: (float(100.0 * cm[i, i] / support[i]) if support[i] else None)
                 for i, name in enumerate(classnames)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns for classes absent from y_true; handled above
        bal = balanced_accuracy_score(labels, preds)
        f1 = f1_score(labels, preds, labels=sorted(set(labels.tolist())), average="macro", zero_division=0)
    return {
        "n": int(labels.shape[0]),
        "accuracy": float(100.0 * accuracy_score(labels, preds)),
        "balanced_accuracy": float(100.0 * bal),
        "macro_f1": float(100.0 * f1),
        "auroc_ovr": ovr_auroc(probs, labels),
        "ece": expected_calibration_error(probs, labels),
        "ci95": (bootstrap_ci(probs, labels, N_RESAMPLES if ci_resamples is None else ci_resamples, ci_seed)
                 if ci_resamples != 0 else {}),
        "per_class": per_class_rates(cm, list(classnames)),
        "per_class_ci": {"level": CI_LEVEL, "method": RATE_METHOD,
                         **({"note": note} if (note := small_sample_note(labels)) else {})},
        **({"operating_points": ops} if (ops := operating_points(probs, labels, list(classnames))) else {}),
        "per_class_accuracy": per_class,
        "support": {name: int(support[i]) for i, name in enumerate(classnames)},
        "confusion_matrix": cm.tolist(),
        "classnames": list(classnames),
    }


STUDY_KEYS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "auroc_ovr", "ece")


def study_probs(probs: np.ndarray, labels: np.ndarray, studies: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Study-level predictions: the mean of each study's sample probabilities. A study is keyed by
    (study id, label), so a mislabelled patient cannot merge two classes; order = first appearance."""
    order: dict[tuple[str, int], list[int]] = {}
    for i, (st, y) in enumerate(zip(studies, np.asarray(labels).tolist())):
        order.setdefault((st, int(y)), []).append(i)
    p = np.stack([np.asarray(probs, dtype=np.float64)[idx].mean(axis=0) for idx in order.values()]) \
        if order else np.zeros((0, np.asarray(probs).shape[1]))
    return p, np.array([y for _, y in order], dtype=np.int64), [st for st, _ in order]


def with_study_metrics(metrics: dict, probs: np.ndarray, labels: np.ndarray, samples, classnames: list[str]) -> dict:
    """Add ``metrics["study"]`` (same metrics over studies; see ``study_probs``) for hospital data, i.e.
    when samples carry patient ids or come from volumes; benchmark results stay as they were."""
    if not any(getattr(s, "patient_id", None) is not None or getattr(s, "view", None) for s in samples):
        return metrics
    p, y, ids = study_probs(probs, labels, [s.study for s in samples])
    study = classification_metrics(p, y, classnames)
    study["samples_per_study"] = round(len(samples) / max(1, len(ids)), 3)
    metrics["study"] = study
    return metrics


def study_metric_names(label: str, metrics: dict) -> dict:
    """MLflow metric names of the study level: ``<label>/study_<metric>`` (NaN skipped)."""
    st = metrics.get("study")
    if not st:
        return {}
    return {f"{label}/study_{k}": float(st[k]) for k in STUDY_KEYS if k != "n" and st[k] == st[k]}
