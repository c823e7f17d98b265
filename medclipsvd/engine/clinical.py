"""Clinical reporting: bootstrap confidence intervals and per-class diagnostic rates.

Confidence intervals are percentile intervals of a stratified bootstrap: each resample draws, within every
true class, as many test images as that class has (with replacement), so every resample keeps the class
mix of the test set and a one-vs-rest AUROC is always defined. All resamples are evaluated at once with
NumPy as a matrix of bootstrap counts [resamples, N] (how often each image is drawn): every metric is then
a weighted sum, and the AUROC needs one sort per class, not one per resample. Ties in the AUROC count 1/2,
as in scikit-learn's roc_auc_score.

Per-class rates (sensitivity, specificity, PPV, NPV) are proportions with a known denominator, so their
intervals are Wilson score intervals (closed form; good coverage down to a handful of images, never outside
0-100 %), not bootstrap percentiles. An interval that cannot be estimated is null, with the reason, never a
point shown as if it were a range: a rate with a zero denominator, or a bootstrap whose resamples all give the
same value (too few images per class to vary). Small samples get a note: their intervals are wide and rough.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

N_RESAMPLES = 1000
CI_LEVEL = 0.95
# below these, intervals are shown with a note: percentile bootstraps and the normal approximation behind the
# Wilson interval both get rough (coverage below the nominal level) with few images per class
SMALL_N = 30
SMALL_CLASS = 10
RATE_METHOD = "Wilson score interval"


def wilson_interval(successes: int, trials: int, level: float = CI_LEVEL) -> list[float] | None:
    """[low, high] in % of a proportion successes/trials, or None when trials is 0 (nothing to estimate)."""
    if trials <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * np.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials))
    return [float(100.0 * max(0.0, centre - half)), float(100.0 * min(1.0, centre + half))]


def small_sample_note(labels: np.ndarray) -> str | None:
    """A one-line warning for the report when the sample is too small for the intervals to be more than rough."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return None
    smallest = int(min((labels == c).sum() for c in np.unique(labels)))
    if labels.size >= SMALL_N and smallest >= SMALL_CLASS:
        return None
    return f"small sample (n={labels.size}, smallest class {smallest}): intervals are wide and approximate"


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
    preds = probs.argmax(axis=1)
    # F1 of class c = 2 TP / (predicted c + truly c), averaged over the classes present (as the reported
    # macro-F1); every present class has images in every stratified resample, so no denominator is 0
    f1s = [2.0 * total(correct & (labels == c)) / (total(preds == c) + total(labels == c)) for c in present]
    out["macro_f1"] = 100.0 * np.mean(f1s, axis=0)
    if len(present) >= 2:
        if probs.shape[1] == 2:  # binary: the AUROC of the positive class (as metrics.ovr_auroc)
            out["auroc_ovr"] = _weighted_auc(probs[:, 1], labels == 1, w)
        else:
            out["auroc_ovr"] = np.mean([_weighted_auc(probs[:, c], labels == c, w) for c in present], axis=0)
    return out


BOOTSTRAPPED = ("accuracy", "balanced_accuracy", "macro_f1", "auroc_ovr")


def bootstrap_ci(probs: np.ndarray, labels: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = CI_LEVEL) -> dict:
    """{metric: [low, high] or None} percentile intervals, plus the settings used (JSON-ready).
    None = not estimable; ``not_estimable`` then says why, and ``note`` flags a small sample."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    out: dict = {"level": level, "n_resamples": int(n_resamples), "seed": int(seed), "method": "stratified percentile bootstrap"}
    if labels.size == 0:
        return out
    why: dict[str, str] = {}
    counts = stratified_counts(labels, n_resamples, seed)
    alpha = (1.0 - level) / 2.0
    resampled = resampled_metrics(probs, labels, counts)
    for name in BOOTSTRAPPED:
        values = resampled.get(name, np.zeros(0))
        values = values[np.isfinite(values)]
        if not values.size:
            out[name], why[name] = None, "undefined (fewer than two classes present)"
        elif values.max() - values.min() <= 1e-9 * max(1.0, float(np.abs(values).max())):  # summation noise only
            out[name], why[name] = None, ("every resample gives the same value (few images per class, or a result "
                                          "that no resample changes, e.g. all correct): the bootstrap cannot size "
                                          "the uncertainty")
        else:
            lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
            out[name] = [float(lo), float(hi)]
    if why:
        out["not_estimable"] = why
    note = small_sample_note(labels)
    if note:
        out["note"] = note
    return out


def per_class_rates(cm: np.ndarray, classnames: list[str], level: float = CI_LEVEL) -> dict[str, dict]:
    """One-vs-rest sensitivity (recall), specificity, PPV (precision) and NPV per class, in %, from a
    confusion matrix (rows = true, columns = predicted). None where the denominator is 0. ``ci95``: the
    Wilson interval of each rate (None with a zero denominator)."""
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
                     "npv": rate(tn, fn), "tp": tp, "fn": fn, "fp": fp, "tn": tn, "support": tp + fn,
                     "ci95": {"sensitivity": wilson_interval(tp, tp + fn, level),
                              "specificity": wilson_interval(tn, tn + fp, level),
                              "ppv": wilson_interval(tp, tp + fp, level), "npv": wilson_interval(tn, tn + fn, level)}}
    return out
