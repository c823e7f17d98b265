"""Bootstrap confidence intervals (stratified, seeded, vectorised) and per-class diagnostic rates,
checked against scikit-learn on the same resamples; the clinical figures are written."""
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_score, recall_score, roc_auc_score

from medclipsvd.engine.clinical import (N_RESAMPLES, bootstrap_ci, per_class_rates, resampled_metrics,
                                        stratified_counts)
from medclipsvd.engine.metrics import classification_metrics
from medclipsvd.engine.plots import plot_accuracy_vs_shots, plot_evaluation


def _toy(n=300, c=4, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c), n)
    p[np.arange(n), y] += 0.4
    p /= p.sum(axis=1, keepdims=True)
    return (np.round(p, 2) if ties else p), y


@pytest.mark.parametrize("c", [2, 4])
def test_each_resample_equals_sklearn_on_the_expanded_sample(c):
    p, y = _toy(c=c)
    counts = stratified_counts(y, 5, seed=3)
    got = resampled_metrics(p, y, counts)
    for b in range(5):
        idx = np.repeat(np.arange(len(y)), counts[b])
        yy, pp = y[idx], p[idx]
        auc = roc_auc_score(yy, pp[:, 1]) if c == 2 else np.mean([roc_auc_score(yy == k, pp[:, k]) for k in range(c)])
        assert got["auroc_ovr"][b] == pytest.approx(auc, abs=1e-12)
        assert got["accuracy"][b] == pytest.approx(100 * np.mean(pp.argmax(1) == yy), abs=1e-9)
        assert got["balanced_accuracy"][b] == pytest.approx(100 * balanced_accuracy_score(yy, pp.argmax(1)), abs=1e-9)


def test_stratified_resamples_keep_the_class_counts():
    _, y = _toy()
    counts = stratified_counts(y, 50, seed=1)
    for k in np.unique(y):
        assert (counts[:, y == k].sum(axis=1) == (y == k).sum()).all()
    assert counts.shape == (50, len(y)) and counts.std() > 0


def test_ci_is_seeded_contains_the_estimate_and_narrows_with_n():
    p, y = _toy(n=200)
    a, b = bootstrap_ci(p, y, seed=5), bootstrap_ci(p, y, seed=5)
    assert a == b and a["n_resamples"] == N_RESAMPLES >= 1000 and a["level"] == 0.95
    assert bootstrap_ci(p, y, seed=6)["accuracy"] != a["accuracy"]
    m = classification_metrics(p, y, ["a", "b", "c", "d"])
    for key in ("accuracy", "balanced_accuracy", "auroc_ovr"):
        lo, hi = m["ci95"][key]
        assert lo <= m[key] <= hi and lo < hi
    p2, y2 = _toy(n=3000)
    wide = np.diff(a["accuracy"])[0]
    narrow = np.diff(bootstrap_ci(p2, y2, seed=5)["accuracy"])[0]
    assert narrow < wide / 2  # width ~ 1/sqrt(n): 15x the data, ~3.9x narrower


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_interval_is_the_labelled_percentile_of_the_resampled_metrics(level):
    """Each bound is the (1 - level)/2 and (1 + level)/2 quantile of the metric over the resamples, computed
    here with scikit-learn on each resample expanded to its images and np.percentile (linear interpolation)."""
    p, y = _toy(n=120, c=3)
    n_res, seed = 200, 11
    ci = bootstrap_ci(p, y, n_resamples=n_res, seed=seed, level=level)
    counts = stratified_counts(y, n_res, seed)  # the resamples themselves: checked against sklearn above
    acc, bal, auc = [], [], []
    for b in range(n_res):
        idx = np.repeat(np.arange(len(y)), counts[b])
        yy, pp = y[idx], p[idx]
        acc.append(100 * np.mean(pp.argmax(1) == yy))
        bal.append(100 * balanced_accuracy_score(yy, pp.argmax(1)))
        auc.append(np.mean([roc_auc_score(yy == k, pp[:, k]) for k in range(3)]))
    tail = 100 * (1 - level) / 2
    for key, values in (("accuracy", acc), ("balanced_accuracy", bal), ("auroc_ovr", auc)):
        expected = np.percentile(values, [tail, 100 - tail])
        np.testing.assert_allclose(ci[key], expected, rtol=0, atol=1e-9, err_msg=key)
    assert ci["level"] == level and ci["n_resamples"] == n_res and ci["seed"] == seed


def test_classification_metrics_ci95_is_a_95_percent_interval():
    p, y = _toy(n=120, c=3)
    m = classification_metrics(p, y, ["a", "b", "c"], ci_resamples=200, ci_seed=4)
    counts = stratified_counts(y, 200, 4)
    acc = [100 * np.mean(p[np.repeat(np.arange(len(y)), c)].argmax(1) == y[np.repeat(np.arange(len(y)), c)])
           for c in counts]
    np.testing.assert_allclose(m["ci95"]["accuracy"], np.percentile(acc, [2.5, 97.5]), rtol=0, atol=1e-9)
    assert m["ci95"]["level"] == 0.95


def test_per_class_rates_match_sklearn():
    p, y = _toy(c=3)
    pred = p.argmax(1)
    cm = confusion_matrix(y, pred, labels=[0, 1, 2])
    rates = per_class_rates(cm, ["x", "y", "z"])
    sens = recall_score(y, pred, average=None) * 100
    ppv = precision_score(y, pred, average=None) * 100
    for i, name in enumerate("xyz"):
        r = rates[name]
        assert r["sensitivity"] == pytest.approx(sens[i]) and r["ppv"] == pytest.approx(ppv[i])
        assert r["specificity"] == pytest.approx(100 * recall_score(y != i, pred != i))
        assert r["npv"] == pytest.approx(100 * precision_score(y != i, pred != i))
        assert r["tp"] + r["fn"] + r["fp"] + r["tn"] == len(y)


def test_classification_metrics_per_class_rates_match_sklearn():
    """The rates classification_metrics reports (its own confusion matrix handed to per_class_rates), not
    per_class_rates fed by the test: a transposed matrix would swap sensitivity with PPV and specificity
    with NPV."""
    from sklearn.metrics import multilabel_confusion_matrix

    p, y = _toy(n=200, c=3, seed=2)
    pred = p.argmax(1)
    names = ["benign", "malignant", "normal"]
    m = classification_metrics(p, y, names, ci_resamples=0)
    sens = 100 * recall_score(y, pred, labels=[0, 1, 2], average=None)
    ppv = 100 * precision_score(y, pred, labels=[0, 1, 2], average=None)
    mcm = multilabel_confusion_matrix(y, pred, labels=[0, 1, 2])  # per class [[tn, fp], [fn, tp]]
    assert not np.allclose(sens, ppv)  # the data tell a transposed matrix apart
    for i, name in enumerate(names):
        r = m["per_class"][name]
        (tn, fp), (fn, tp) = mcm[i]
        assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (tp, fn, fp, tn)
        assert r["sensitivity"] == pytest.approx(sens[i], abs=1e-9)
        assert r["ppv"] == pytest.approx(ppv[i], abs=1e-9)
        assert r["specificity"] == pytest.approx(100 * recall_score(y != i, pred != i), abs=1e-9)
        assert r["npv"] == pytest.approx(100 * precision_score(y != i, pred != i), abs=1e-9)
        assert r["support"] == int((y == i).sum())


def test_per_class_rates_by_hand():
    # true a: 3 predicted a, 1 predicted b; true b: 2 b; true c: 1 a, 1 c (rows true, columns predicted)
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    probs = np.full((8, 3), 0.1)
    probs[np.arange(8), preds] = 0.8
    r = classification_metrics(probs, labels, ["a", "b", "c"], ci_resamples=0)["per_class"]
    r = {name: {k: v for k, v in rates.items() if k != "ci95"} for name, rates in r.items()}  # intervals: below
    # class a: tp 3, fn 1, fp 1 (a c predicted a), tn 3
    assert r["a"] == {"sensitivity": 75.0, "specificity": 75.0, "ppv": 75.0, "npv": 75.0,
                      "tp": 3, "fn": 1, "fp": 1, "tn": 3, "support": 4}
    # class b: tp 2, fn 0, fp 1, tn 5
    assert r["b"] == {"sensitivity": 100.0, "specificity": pytest.approx(500 / 6), "ppv": pytest.approx(200 / 3),
                      "npv": 100.0, "tp": 2, "fn": 0, "fp": 1, "tn": 5, "support": 2}
    # class c: tp 1, fn 1, fp 0, tn 6
    assert r["c"] == {"sensitivity": 50.0, "specificity": 100.0, "ppv": 100.0, "npv": pytest.approx(600 / 7),
                      "tp": 1, "fn": 1, "fp": 0, "tn": 6, "support": 2}


def test_undefined_rates_are_none():
    rates = per_class_rates(np.array([[3, 0], [2, 0]]), ["a", "b"])
    assert rates["b"]["ppv"] is None and rates["b"]["sensitivity"] == 0.0


def test_clinical_figures_are_written(tmp_path):
    p, y = _toy(c=3)
    m = classification_metrics(p, y, ["benign", "malignant", "normal"], ci_resamples=0)
    assert m["ci95"] == {} and "per_class" in m
    paths = plot_evaluation(p, y, m, ["benign", "malignant", "normal"], tmp_path, "test", "toy")
    for key in ("confusion", "roc", "reliability"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"


def test_accuracy_plot_error_bars_and_baseline(tmp_path):
    path = plot_accuracy_vs_shots({"svd": {1: 50.0, 2: 60.0}, "lora": {1: 50.0, 2: 60.0}}, tmp_path / "p.png",
                                  errors={"svd": {1: 2.0, 2: 1.0}}, baseline=("zero-shot", 40.0))
    assert path.read_bytes()[:4] == b"\x89PNG"


# --- what mutation testing of clinical.py asked for (docs/mutation.md) ------------------------------------------

def test_every_image_can_be_drawn_and_is_drawn_once_per_resample_on_average():
    _, y = _toy(n=60, c=3)
    counts = stratified_counts(y, 400, seed=2)
    assert (counts.sum(axis=0) > 0).all()  # no image (e.g. the first of a class) is never drawn
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=0.25)


def test_ci_settings_and_defaults_are_recorded():
    p, y = _toy(n=80, c=3)
    ci = bootstrap_ci(p, y, n_resamples=50)
    assert {k: ci[k] for k in ("level", "n_resamples", "seed", "method")} == {
        "level": 0.95, "n_resamples": 50, "seed": 0, "method": "stratified percentile bootstrap"}
    assert ci == bootstrap_ci(p, y, n_resamples=50, seed=0, level=0.95)
    assert set(bootstrap_ci(p[:0], y[:0])) == {"level", "n_resamples", "seed", "method"}  # no test images


def test_one_test_image_gives_no_interval_but_a_reason_and_a_note():
    """A bootstrap of one image repeats it: a point, not an interval; reported as null with the reason."""
    p = np.array([[0.8, 0.2]])
    ci = bootstrap_ci(p, np.array([0]), n_resamples=20)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auroc_ovr"):
        assert ci[key] is None and key in ci["not_estimable"]
    assert "same value" in ci["not_estimable"]["accuracy"] and "two classes" in ci["not_estimable"]["auroc_ovr"]
    assert "small sample (n=1" in ci["note"]


# --- issue 21: intervals on every per-class rate and on macro-F1 ------------------------------------------------

def _wilson_by_hand(k, n, z=1.959963984540054):
    """Wilson (1927) score interval, written out from the textbook formula, in %."""
    p = k / n
    centre = (2 * n * p + z * z) / (2 * (n + z * z))
    half = z * np.sqrt(z * z + 4 * n * p * (1 - p)) / (2 * (n + z * z))
    return [100 * (centre - half), 100 * (centre + half)]


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (3, 4), (0, 7), (7, 7), (12, 40), (399, 400)])
def test_wilson_interval_matches_scipy_and_the_textbook_formula(k, n):
    from scipy.stats import binomtest

    from medclipsvd.engine.clinical import wilson_interval

    ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
    got = wilson_interval(k, n)
    np.testing.assert_allclose(got, [100 * ref.low, 100 * ref.high], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, _wilson_by_hand(k, n), rtol=0, atol=1e-9)
    assert wilson_interval(k, n, level=0.8)[1] - wilson_interval(k, n, level=0.8)[0] < got[1] - got[0]


def test_every_per_class_rate_has_its_wilson_interval():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    probs = np.full((8, 3), 0.1)
    probs[np.arange(8), preds] = 0.8
    m = classification_metrics(probs, labels, ["a", "b", "c"], ci_resamples=0)
    # class b: tp 2, fn 0, fp 1, tn 5
    ci = m["per_class"]["b"]["ci95"]
    np.testing.assert_allclose(ci["sensitivity"], _wilson_by_hand(2, 2), atol=1e-9)
    np.testing.assert_allclose(ci["specificity"], _wilson_by_hand(5, 6), atol=1e-9)
    np.testing.assert_allclose(ci["ppv"], _wilson_by_hand(2, 3), atol=1e-9)
    np.testing.assert_allclose(ci["npv"], _wilson_by_hand(5, 5), atol=1e-9)
    assert m["per_class_ci"]["method"] == "Wilson score interval" and m["per_class_ci"]["level"] == 0.95
    assert "small sample (n=8, smallest class 2)" in m["per_class_ci"]["note"]


def test_a_rate_with_no_denominator_has_no_interval():
    rates = per_class_rates(np.array([[3, 0], [2, 0]]), ["a", "b"])
    assert rates["b"]["ci95"]["ppv"] is None  # nothing predicted b
    np.testing.assert_allclose(rates["b"]["ci95"]["sensitivity"], _wilson_by_hand(0, 2), atol=1e-9)


def test_large_samples_get_no_small_sample_note():
    p, y = _toy(n=300, c=3)
    m = classification_metrics(p, y, ["a", "b", "c"], ci_resamples=50)
    assert "note" not in m["ci95"] and "note" not in m["per_class_ci"] and "not_estimable" not in m["ci95"]


def test_macro_f1_interval_is_the_percentile_of_sklearn_on_each_resample():
    from sklearn.metrics import f1_score

    p, y = _toy(n=90, c=3, seed=4)
    n_res, seed = 150, 2
    ci = bootstrap_ci(p, y, n_resamples=n_res, seed=seed)
    f1 = []
    for c in stratified_counts(y, n_res, seed):
        idx = np.repeat(np.arange(len(y)), c)
        f1.append(100 * f1_score(y[idx], p[idx].argmax(1), average="macro"))
    np.testing.assert_allclose(ci["macro_f1"], np.percentile(f1, [2.5, 97.5]), rtol=0, atol=1e-9)
    m = classification_metrics(p, y, ["a", "b", "c"], ci_resamples=n_res, ci_seed=seed)
    assert m["ci95"]["macro_f1"][0] <= m["macro_f1"] <= m["ci95"]["macro_f1"][1]


def test_an_all_correct_result_has_no_interval_rather_than_a_point_range():
    """Every image right: every resample gives 100 %, which is no interval; AUROC 1 likewise."""
    y = np.repeat([0, 1, 2], 20)
    p = np.full((60, 3), 0.1)
    p[np.arange(60), y] = 0.8
    ci = bootstrap_ci(p, y, n_resamples=50)
    assert ci["accuracy"] is None and ci["auroc_ovr"] is None and "same value" in ci["not_estimable"]["accuracy"]
    assert "note" not in ci  # n = 60, 20 per class: not a small sample, just a result no resample changes
