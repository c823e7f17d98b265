"""Operating points of binary tasks (sensitivity at fixed specificity and the reverse), checked against the
ROC curve of scikit-learn, and what applying their threshold gives."""
import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medclipsvd.engine.metrics import classification_metrics
from medclipsvd.engine.operating_points import operating_points


def _binary(n=400, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.18), 0, 1)
    s = np.round(s, 2) if ties else s
    return np.stack([1 - s, s], axis=1), y


def _sklearn_point(y, s, target, fixed):
    """The best point of sklearn's full ROC curve meeting `target` % on the `fixed` rate."""
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    sens, spec = 100 * tpr, 100 * (1 - fpr)
    achieved, other = (spec, sens) if fixed == "specificity" else (sens, spec)
    ok = achieved >= target - 1e-12
    best_other = other[ok].max()
    cand = np.flatnonzero(ok & (other == best_other))
    i = cand[np.argmax(achieved[cand])]
    return thr[i], sens[i], spec[i]


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_operating_points_match_sklearn_roc_curve(seed, ties):
    p, y = _binary(seed=seed, ties=ties)
    ops = operating_points(p, y, ["normal", "pneumonia"])
    assert ops["positive_class"] == "pneumonia"
    for target in (90, 95):
        for fixed, key in (("specificity", "sensitivity_at_specificity"), ("sensitivity", "specificity_at_sensitivity")):
            t, sens, spec = _sklearn_point(y, p[:, 1], target, fixed)
            got = ops[key][str(target)]
            assert got["threshold"] == pytest.approx(t, abs=1e-12)
            assert got["sensitivity"] == pytest.approx(sens, abs=1e-9)
            assert got["specificity"] == pytest.approx(spec, abs=1e-9)
            assert got[fixed] >= target
            # applying the threshold gives the reported rates
            called = p[:, 1] >= got["threshold"]
            assert 100 * called[y == 1].mean() == pytest.approx(got["sensitivity"], abs=1e-9)
            assert 100 * (~called[y == 0]).mean() == pytest.approx(got["specificity"], abs=1e-9)


def test_a_stricter_target_never_gives_a_better_other_rate():
    p, y = _binary(seed=3)
    ops = operating_points(p, y, ["a", "b"])
    assert ops["sensitivity_at_specificity"]["95"]["sensitivity"] <= ops["sensitivity_at_specificity"]["90"]["sensitivity"]
    assert ops["specificity_at_sensitivity"]["95"]["specificity"] <= ops["specificity_at_sensitivity"]["90"]["specificity"]


def test_when_only_calling_nobody_positive_reaches_the_specificity_the_threshold_is_null():
    # every negative scores above every positive: any threshold that calls a positive calls all negatives too
    p1 = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    y = np.array([0, 0, 0, 1, 1])
    ops = operating_points(np.stack([1 - p1, p1], 1), y, ["a", "b"])
    assert ops["sensitivity_at_specificity"]["90"] == {"threshold": None, "sensitivity": 0.0, "specificity": 100.0}


def test_only_binary_tasks_with_both_classes_get_operating_points():
    p, y = _binary(n=50)
    assert operating_points(p, np.zeros_like(y), ["a", "b"]) is None
    three = np.full((4, 3), 1 / 3)
    assert operating_points(three, np.array([0, 1, 2, 0]), ["a", "b", "c"]) is None
    assert "operating_points" not in classification_metrics(three, np.array([0, 1, 2, 0]), ["a", "b", "c"], ci_resamples=0)
    assert classification_metrics(p, y, ["a", "b"], ci_resamples=0)["operating_points"] == operating_points(p, y, ["a", "b"])
