"""Issue 21's acceptance: after `medclipsvd demo`, results.json has a 95 % interval for the sensitivity,
specificity, PPV and NPV of every class, per image and per study, and the run's plots include the study-level
ROC, reliability and confusion figures. The demo runs as a user runs it (the CLI), capped at a few training
steps to stay fast."""
import json

import numpy as np
import pytest

from medclipsvd.cli.app import run

RATES = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"), "ppv": ("tp", "fp"), "npv": ("tn", "fn")}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo as a user runs it from a folder of their own (default --output medclipsvd-demo)."""
    import os

    import medclipsvd.engine.pipeline_spec as engine_run  # where demo.py takes spec_from_pipeline from

    real = engine_run.spec_from_pipeline
    mp = pytest.MonkeyPatch()
    mp.setattr(engine_run, "spec_from_pipeline", lambda *a, **k: real(*a, **{**k, "max_steps": 3}))
    where = tmp_path_factory.mktemp("demo")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = run(["demo", "--device", "cpu"])
    finally:
        mp.undo()
        os.chdir(cwd)
    assert code == 0, buf.getvalue()
    return where / "medclipsvd-demo" / "run", buf.getvalue()


def _check_rate_intervals(m: dict) -> None:
    assert set(m["per_class"]) == set(m["classnames"])
    for name, r in m["per_class"].items():
        for rate, (hit, miss) in RATES.items():
            assert rate in r["ci95"], (name, rate)
            ci, denominator = r["ci95"][rate], r[hit] + r[miss]
            if denominator == 0:  # nothing to estimate: null, never a made-up range
                assert ci is None and r[rate] is None
                continue
            # a Wilson interval: inside 0-100, around the rate, and strictly wider than a point
            assert 0.0 <= ci[0] <= r[rate] <= ci[1] <= 100.0 and ci[1] - ci[0] > 1.0, (name, rate, ci)
    assert m["per_class_ci"]["level"] == 0.95


def test_demo_results_have_95_intervals_for_every_class_rate_per_image_and_per_study(demo_run):
    run_dir, _ = demo_run
    results = json.loads((run_dir / "results.json").read_text())
    m = results["eval"]["test"]
    _check_rate_intervals(m)
    assert "study" in m, "the demo's data has patients: a study level is expected"
    _check_rate_intervals(m["study"])
    assert m["study"]["n"] < m["n"]  # really per study: several images per patient
    for level in (m, m["study"]):  # macro-F1 has its bootstrap interval (or null with the reason)
        ci = level["ci95"]
        assert "macro_f1" in ci and (ci["macro_f1"] is None) == ("macro_f1" in ci.get("not_estimable", {}))


def test_demo_plots_include_study_level_figures_titled_with_pipeline_and_mode(demo_run):
    run_dir, _ = demo_run
    plots = run_dir / "plots"
    for kind in ("roc", "reliability", "confusion"):
        for stem in (f"{kind}_test.png", f"{kind}_test_study.png"):
            assert (plots / stem).read_bytes()[:4] == b"\x89PNG", stem


def test_demo_prints_the_study_level_per_class_table_with_intervals(demo_run):
    _, text = demo_run
    assert "per class, test (per study)" in text and "per class, test (one-vs-rest" in text
    assert "Wilson score interval" in text
    assert all(len(line) <= 80 for line in text.splitlines()), [l for l in text.splitlines() if len(l) > 80]


def test_plot_titles_name_the_pipeline_and_the_mode():
    from medclipsvd.engine.plots import plot_title

    assert plot_title("/x/pipelines/demo.yaml", "custom", "test", "svd", "improved") == \
        "pipeline demo (custom) test · svd · improved mode"
    assert plot_title(None, "BUSI", "test", "lora", "parity") == "BUSI test · lora · parity mode"
