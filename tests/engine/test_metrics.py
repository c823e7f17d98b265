import math

import numpy as np
import pytest

from medclipsvd.engine.metrics import classification_metrics, expected_calibration_error, ovr_auroc

NAMES = ["a", "b", "c"]


def test_metrics_hand_computed():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    probs = np.full((8, 3), 0.1)
    probs[np.arange(8), preds] = 0.8
    m = classification_metrics(probs, labels, NAMES)
    assert m["accuracy"] == pytest.approx(100 * 6 / 8)
    assert m["balanced_accuracy"] == pytest.approx(100 * (3 / 4 + 1 + 1 / 2) / 3)
    assert m["per_class_accuracy"] == {"a": 75.0, "b": 100.0, "c": 50.0}
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    # every prediction has confidence 0.8, accuracy 0.75 -> ECE = 0.05
    assert m["ece"] == pytest.approx(0.05)
    f1 = [2 * 3 / (2 * 3 + 1 + 1), 2 * 2 / (2 * 2 + 1), 2 * 1 / (2 * 1 + 1)]
    assert m["macro_f1"] == pytest.approx(100 * np.mean(f1))


def test_auroc_perfect_and_reversed():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[labels] * 0.9 + 0.05
    assert ovr_auroc(probs, labels) == pytest.approx(1.0)
    assert ovr_auroc(1 - probs, labels) == pytest.approx(0.0)
    assert math.isnan(ovr_auroc(probs[:1], labels[:1]))


def test_ece_perfectly_calibrated_is_zero():
    probs = np.array([[1.0, 0.0]] * 4)
    assert expected_calibration_error(probs, np.zeros(4, dtype=int)) == 0.0


def test_missing_test_class_reported_as_none():
    m = classification_metrics(np.array([[0.9, 0.1, 0.0]]), np.array([0]), NAMES)
    assert m["per_class_accuracy"]["c"] is None and m["support"]["c"] == 0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        classification_metrics(np.zeros((3, 3)), np.zeros(2, dtype=int), NAMES)


# --- what mutation testing of metrics.py asked for (docs/mutation.md) --------------------------------------------

def _ece_by_hand(probs, labels, n_bins):
    """Equal-width bins (lo, hi] over [0, 1] (the first also holding 0), each weighted by its share."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i, c in enumerate(conf) if (lo < c <= hi) or (b == 0 and c == 0)]
        if members:
            total += len(members) / len(conf) * abs(np.mean(correct[members]) - np.mean(conf[members]))
    return total


@pytest.mark.parametrize("n_bins", [15, 10, 4])
def test_ece_matches_the_binning_rule(n_bins):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3) * 0.7, 200)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    # right below 0.45 and above 0.65, wrong in between: the gap changes sign across bins, so the bin edges
    # matter (with one sign everywhere, any binning gives mean(conf) - accuracy)
    labels = np.where((conf < 0.45) | (conf > 0.65), pred, (pred + 1) % 3)
    got = expected_calibration_error(probs, labels, n_bins) if n_bins != 15 else expected_calibration_error(probs, labels)
    assert got == pytest.approx(_ece_by_hand(probs, labels, n_bins), abs=1e-12)
    assert got > 0.05  # several bins contribute


def test_ece_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    probs = np.full((4, 15), 1 / 15)  # confidence exactly 1/15 = the first bin's upper edge
    labels = np.array([0, 1, 2, 3])  # argmax is 0: one correct of four
    assert expected_calibration_error(probs, labels) == pytest.approx(abs(0.25 - 1 / 15), abs=1e-12)


def test_binary_auroc_is_sklearns_on_the_positive_column():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    p1 = np.clip(0.3 * labels + rng.random(50) * 0.7, 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    assert ovr_auroc(probs, labels) == pytest.approx(roc_auc_score(labels, p1), abs=1e-12)
    assert 0.6 < ovr_auroc(probs, labels) < 1.0


def test_macro_f1_counts_the_classes_present_in_the_truth():
    from sklearn.metrics import f1_score

    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 0, 2, 1])  # class 1 never predicted correctly; class 2 predicted once right
    probs = np.eye(3)[preds] * 0.9 + 0.05
    m = classification_metrics(probs, labels, NAMES, ci_resamples=0)
    expected = f1_score(labels, preds, labels=[0, 1, 2], average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(100 * expected)
    # a predicted class absent from the truth does not enter the mean (only truth classes 0 and 2 here)
    labels2, preds2 = np.array([0, 0, 2, 2]), np.array([0, 1, 2, 2])
    m2 = classification_metrics(np.eye(3)[preds2] * 0.9 + 0.05, labels2, NAMES, ci_resamples=0)
    assert m2["macro_f1"] == pytest.approx(100 * np.mean([2 / 3, 1.0]))
    assert m2["n"] == 4 and m2["classnames"] == NAMES


def test_default_ci_seed_is_zero():
    from medclipsvd.engine.clinical import bootstrap_ci

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), 40)
    assert classification_metrics(probs, labels, NAMES, ci_resamples=30)["ci95"] == bootstrap_ci(probs, labels, 30, 0)


def test_one_dimensional_probs_are_refused():
    with pytest.raises(ValueError) as err:
        classification_metrics(np.zeros(3), np.zeros(3, dtype=int), NAMES)
    assert str(err.value) == "probs (3,) and labels (3,) disagree"


def test_study_probs_average_each_patient_per_label_in_first_appearance_order():
    from medclipsvd.engine.metrics import study_probs

    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 0, 1])
    studies = ["p2", "p1", "p1", "p2", "p2"]  # p2 with label 1 is a separate study (a labelling mistake)
    p, y, ids = study_probs(probs, labels, studies)
    np.testing.assert_allclose(p, [[0.8, 0.2], [0.35, 0.65], [0.4, 0.6]])
    assert y.tolist() == [0, 1, 1] and y.dtype == np.int64 and ids == ["p2", "p1", "p2"]
    p0, y0, ids0 = study_probs(np.zeros((0, 2)), np.zeros(0, dtype=int), [])
    assert p0.shape == (0, 2) and y0.shape == (0,) and ids0 == []


def test_study_metrics_only_for_hospital_samples_and_their_mlflow_names():
    from medclipsvd.data import Sample
    from medclipsvd.engine.metrics import study_metric_names, with_study_metrics

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 0, 1, 1])
    bench = [Sample(f"{i}.png", int(y), "ab"[y]) for i, y in enumerate(labels)]
    plain = classification_metrics(probs, labels, ["a", "b"], ci_resamples=0)
    assert "study" not in with_study_metrics(dict(plain), probs, labels, bench, ["a", "b"])
    assert study_metric_names("test", plain) == {}
    hosp = [Sample(f"{i}.png", int(y), "ab"[y], patient_id=f"p{y}") for i, y in enumerate(labels)]
    m = with_study_metrics(dict(plain), probs, labels, hosp, ["a", "b"])
    st = m["study"]
    assert st["n"] == 2 and st["samples_per_study"] == 2.0 and st["accuracy"] == 100.0
    assert st["confusion_matrix"] == [[1, 0], [0, 1]]
    vol = [Sample("v.nii", int(y), "ab"[y], view="middle|axial|auto") for y in labels]
    assert with_study_metrics(dict(plain), probs, labels, vol, ["a", "b"])["study"]["n"] == 2  # one volume per label
    names = study_metric_names("test", m)
    assert set(names) == {f"test/study_{k}" for k in ("accuracy", "balanced_accuracy", "macro_f1", "auroc_ovr", "ece")}
    assert names["test/study_accuracy"] == 100.0 and names["test/study_auroc_ovr"] == 1.0
    one_class = with_study_metrics(dict(plain), probs[:2], labels[:2], hosp[:2], ["a", "b"])
    assert "test/study_auroc_ovr" not in study_metric_names("test", one_class)  # NaN is not logged


def test_samples_per_study_is_rounded_to_three_places_and_any_sample_object_works():
    from types import SimpleNamespace as S

    from medclipsvd.engine.metrics import with_study_metrics

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1, 1])
    pids = ["p1", "p1", "p2", "p3", "p3"]  # 5 samples of 3 studies
    hosp = [S(patient_id=p, study=p) for p in pids]  # no `view` attribute: fine
    m = with_study_metrics({}, probs, labels, hosp, ["a", "b"])
    assert m["study"]["samples_per_study"] == 1.667 and m["study"]["n"] == 3
    one = with_study_metrics({}, probs[:2], labels[:2], hosp[:2], ["a", "b"])
    assert one["study"]["samples_per_study"] == 2.0
    vol = [S(view="middle|axial|auto", study="v.nii")]  # no `patient_id` attribute: fine
    assert with_study_metrics({}, probs[:1], labels[:1], vol, ["a", "b"])["study"]["samples_per_study"] == 1.0
    assert with_study_metrics({}, probs[:1], labels[:1], [S(path="x.png")], ["a", "b"]) == {}
