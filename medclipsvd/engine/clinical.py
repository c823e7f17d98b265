"""Clinical reporting: bootstrap confidence intervals and per-class diagnostic rates.

Confidence intervals are percentile intervals of a stratified bootstrap: each resample draws, within every
true class, as many test images as that class has (with replacement), so every resample keeps the class
mix of the test set and a one-vs-rest AUROC is always defined. All resamples are evaluated at once with
NumPy as a matrix of bootstrap counts [resamples, N] (how often each image is drawn): every metric is then
a weighted sum, and the AUROC needs one sort per class, not one per resample. Ties in the AUROC count 1/2,
as in scikit-learn's roc_auc_score.
"""
from __future__ import annotations

import numpy as np

N_RESAMPLES = 1000
CI_LEVEL = 0.95


def stratified_counts(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, N] bootstrap counts: how often each test image appears in each resample. Within every
    true class the counts come from n_c draws with replacement among that class's n_c images."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    counts = np.zeros((n_resamples, labels.size), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = len(members)
        draws = rng.integers(0, n, size=(n_resamples, n)) + np.arange(n_resamples)[:, None] * n
        counts[:, members] = np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return counts


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC (Mann-Whitney U, ties count 1/2) of each resample given as weights w [B, N] over one sample.
    The scores are sorted once; each resample only needs cumulative sums, so the cost is O(B*N)."""
    order = np.argsort(scores, kind="stable")
    s, pos, w = scores[order], positive[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])      # first index of each group of tied scores
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    neg_w = np.add.reduceat(np.where(pos, 0.0, w), starts, axis=1)          # [B, groups] negative weight per score value
    below = np.cumsum(neg_w, axis=1) - neg_w                   # negative weight strictly below each value
    credit = below[:, group] + 0.5 * neg_w[:, group]
    n_pos = w @ pos.astype(w.dtype)
    n_neg = w.sum(axis=1) - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w[:, pos] * credit[:, pos]).sum(axis=1, dtype=np.float64) / (n_pos.astype(np.float64) * n_neg)


def resampled_metrics(probs: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy (%) and macro one-vs-rest AUROC of each resample (rows of `counts`)."""
    correct = probs.argmax(axis=1) == labels
    present = np.unique(labels)
    w = counts.astype(np.float32)  # small integers: exact in float32, half the memory traffic of float64
    def total(mask: np.ndarray) -> np.ndarray:  # weighted count per resample (exact: integers < 2**24)
        return (w @ mask.astype(np.float32)).astype(np.float64)

    out = {"accuracy": 100.0 * total(correct) / total(np.ones_like(correct))}
    recalls = [total(correct & (labels == c)) / total(labels == c) for c in present]
    out["balanced_accuracy"] = 100.0 * np.mean(recalls, axis=0)
    if len(present) >= 2:
        if probs.shape[1] == 2:  # binary: the AUROC of the positive class (as metrics.ovr_auroc)
            out["auroc_ovr"] = _weighted_auc(probs[:, 1], labels == 1, w)
        else:
            out["auroc_ovr"] = np.mean([_weighted_auc(probs[:, c], labels == c, w) for c in present], axis=0)
    return out


def bootstrap_ci(probs: np.ndarray, labels: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = CI_LEVEL) -> dict:
    """{metric: [low, high]} percentile intervals, plus the settings used (JSON-ready)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    out: dict = {"level": level, "n_resamples": int(n_resamples), "seed": int(seed), "method": "stratified percentile bootstrap"}
    if labels.size == 0:
        return out
    counts = stratified_counts(labels, n_resamples, seed)
    alpha = (1.0 - level) / 2.0
    for name, values in resampled_metrics(probs, labels, counts).items():
        values = values[np.isfinite(values)]
        if values.size:
            lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
            out[name] = [float(lo), float(hi)]
    return out


def per_class_rates(cm: np.ndarray, classnames: list[str]) -> dict[str, dict]:
    """One-vs-rest sensitivity (recall), specificity, PPV (precision) and NPV per class, in %, from a
    confusion matrix (rows = true, columns = predicted). None where the denominator is 0."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    out = {}
    for i, name in enumerate(classnames):
        tp = int(cm[i, i])
        fn = int(cm[i].sum() - tp)
        fp = int(cm[:, i].sum() - tp)
        tn = int(total - tp - fn - fp)

        def rate(a: int, b: int):
            return float(100.0 * a / (a + b)) if a + b else None

        out[name] = {"sensitivity": rate(tp, fn), "specificity": rate(tn, fp), "ppv": rate(tp, fp),
                     "npv": rate(tn, fn), "tp": tp, "fn": fn, "fp": fp, "tn": tn, "support": tp + fn}
    return out
