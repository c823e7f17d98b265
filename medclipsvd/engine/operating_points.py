"""Operating points of a binary task: the threshold on the positive class's probability that reaches a target
specificity with the highest sensitivity (a screening test that must not flood the clinic with false alarms),
and the reverse (a rule-out test that must miss few patients).

The positive class is the second class name (index 1), as for the binary AUROC. An image is called positive
when its probability of the positive class is >= the threshold, so the rates are those of the ROC curve at
that threshold (scikit-learn's roc_curve uses the same rule). Every distinct score is a candidate threshold;
of the thresholds that meet the target, the one with the best other rate wins, ties going to the one that
meets the target by the widest margin.
"""
from __future__ import annotations

import numpy as np

TARGETS = (90, 95)  # % specificity (or sensitivity) a clinician would ask for


def _roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, sensitivity, specificity) in %, one point per distinct score, plus the point
    above every score (nothing called positive; threshold None in the report)."""
    thresholds = np.unique(scores)[::-1]
    pos, neg = np.sort(scores[positive]), np.sort(scores[~positive])
    # how many positives / negatives score >= each threshold
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    sens = np.r_[0.0, 100.0 * tp / pos.size]
    spec = np.r_[100.0, 100.0 * (neg.size - fp) / neg.size]
    return np.r_[np.inf, thresholds], sens, spec


def _best(thresholds, achieved, other, target: float) -> dict:
    ok = np.flatnonzero(achieved >= target)  # never empty: the extreme points reach 100 %
    best = ok[np.lexsort((-achieved[ok], -other[ok]))[0]]
    t = thresholds[best]
    return {"threshold": None if not np.isfinite(t) else float(t), "achieved": float(achieved[best]),
            "other": float(other[best])}


def operating_points(probs: np.ndarray, labels: np.ndarray, classnames: list[str]) -> dict | None:
    """For two classes with both present: sensitivity at 90/95 % specificity and specificity at 90/95 %
    sensitivity, each with its threshold. None for other tasks (JSON-ready)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if len(classnames) != 2 or probs.ndim != 2 or probs.shape[1] != 2:
        return None
    positive = labels == 1
    if positive.all() or not positive.any():
        return None
    thresholds, sens, spec = _roc_points(probs[:, 1], positive)
    out: dict = {"positive_class": classnames[1], "rule": "positive when P(positive class) >= threshold",
                 "n_positive": int(positive.sum()), "n_negative": int((~positive).sum()),
                 "sensitivity_at_specificity": {}, "specificity_at_sensitivity": {}}
    for target in TARGETS:
        b = _best(thresholds, spec, sens, target)
        out["sensitivity_at_specificity"][str(target)] = {"threshold": b["threshold"], "sensitivity": b["other"],
                                                         "specificity": b["achieved"]}
        b = _best(thresholds, sens, spec, target)
        out["specificity_at_sensitivity"][str(target)] = {"threshold": b["threshold"], "specificity": b["other"],
                                                         "sensitivity": b["achieved"]}
    return out
