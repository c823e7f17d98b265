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
