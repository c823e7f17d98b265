"""Training on a hospital folder of DICOM series: K counts patients, the volume policy is recorded in
results.json / the adapter config / the MLflow params, and evaluation has slice- and study-level metrics."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from volume_synth import PATIENT_NEEDLES, write_series  # noqa: E402

from medclipsvd.engine.adapter_evaluation import evaluate_adapter  # noqa: E402

from medclipsvd.engine.pipeline_spec import spec_from_pipeline

from medclipsvd.engine.run import run_experiment
from medclipsvd.engine.tracker import NullTracker  # noqa: E402


class _Recorder(NullTracker):
    """A tracker that keeps what it is given (params, metrics); the rest as NullTracker."""

    def __init__(self):
        self.params, self.metrics = {}, {}

    def run(self, name, tags=None):
        import contextlib

        return contextlib.nullcontext()

    def log_params(self, p):
        self.params.update(p)

    def log_metrics(self, m, step=None):
        self.metrics.update(m)

    def log_artifact(self, *a, **k):
        pass

    def set_tags(self, *a, **k):
        pass


@pytest.fixture(scope="module")
def hospital_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hospital") / "ct"
    for c, cls in enumerate(("normal", "nodule")):
        for p in range(4):
            hu = (lambda j, r, cc, c=c: __import__("numpy").full((r, cc), -700.0 + 600 * c + 20 * j))
            write_series(root / cls / f"patient{c}{p}" / "series1", n=4, rows=16, cols=16, uid=f"1.2.{c}.{p}",
                         seed=p, hu=hu)
    return root


@pytest.fixture(scope="module")
def trained(hospital_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    tracker = _Recorder()
    spec = spec_from_pipeline("ct_study_folder", data_root=str(hospital_root), output=str(out), backbone="tiny-clip",
                              device="cpu", max_steps=2, shots=1, progress=False,
                              volume={"slices": "all", "window": "lung"})
    return run_experiment(spec, tracker=tracker), out, tracker


def test_k1_draws_one_patient_per_class(hospital_root):
    from medclipsvd.data import load_dataset, sample_few_shot

    splits = load_dataset("custom", hospital_root, slices="all")
    draws = set()
    for seed in (1, 2, 3, 4, 5, 6):
        few = sample_few_shot(splits, 1, seed)
        draws.add(tuple(sorted({s.patient_id for s in few.train})))
        assert few == sample_few_shot(splits, 1, seed)  # the seed alone decides the draw
        by_class = {}
        for s in few.train:
            by_class.setdefault(s.classname, set()).add(s.patient_id)
        assert sorted(by_class) == ["nodule", "normal"] and all(len(v) == 1 for v in by_class.values())
        (pid_normal,), (pid_nodule,) = by_class["normal"], by_class["nodule"]
        # patient ids are the headers' PatientIDs (pseudonyms): each names one patient folder of its class
        for pid, folder in ((pid_normal, "patient0"), (pid_nodule, "patient1")):
            folders = {Path(s.path).parent.name for s in few.train if s.patient_id == pid}
            assert pid.startswith("pt-") and len(folders) == 1 and folders.pop().startswith(folder)
        assert len(few.train) == 8  # all 4 slices of each chosen patient
        train_patients = {s.patient_id for s in splits.train}
        assert {pid_normal, pid_nodule} <= train_patients
    # 2 train patients per class: 4 possible draws; six seeds all drawing the same pair means the seed is ignored
    assert len(draws) >= 2, draws


def test_patient_level_split_has_no_leakage(hospital_root):
    from medclipsvd.data import load_dataset

    splits = load_dataset("custom", hospital_root, slices="all")
    where = {}
    for sp in ("train", "val", "test"):
        for s in splits.split(sp):
            assert where.setdefault(s.patient_id, sp) == sp
    assert {sp for sp in where.values()} == {"train", "val", "test"}


def test_results_have_slice_and_study_metrics_and_policy(trained):
    res, out, tracker = trained
    on_disk = json.loads((out / "results.json").read_text())
    test = on_disk["eval"]["test"]
    assert test["n"] == 8 and test["study"]["n"] == 2 and test["study"]["samples_per_study"] == 4
    # the input policy is recorded once: results.json "run"."input" (issue 17), not in the adapter's config
    assert on_disk["run"]["input"] == {"slices": "all", "window": "lung", "axis": "axial", "dicom_frames": "volume"}
    assert not {"slices", "window", "axis", "dicom_frames"} & set(on_disk["run"])
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert "input" not in cfg.get("extra", {})
    assert tracker.params["slices"] == "all" and tracker.params["window"] == "lung"
    assert tracker.metrics["test/study_accuracy"] == pytest.approx(test["study"]["accuracy"], abs=1e-9)
    cm = test["study"]["confusion_matrix"]  # 2 studies: the accuracy is the diagonal's share
    assert test["study"]["accuracy"] == pytest.approx(100 * (cm[0][0] + cm[1][1]) / 2)
    assert (out / "plots" / "confusion_test_study.png").stat().st_size > 0
    text = (out / "results.json").read_text() + json.dumps(tracker.params) + json.dumps(tracker.metrics)
    assert not any(n in text for n in PATIENT_NEEDLES)


def test_evaluate_uses_the_training_policy(trained, tmp_path):
    res, out, _ = trained
    ev, _ = evaluate_adapter(str(out / "adapter"), device="cpu", output=str(tmp_path))
    assert ev["input"]["slices"] == "all" and ev["eval"]["test"]["study"]["n"] == 2
    assert ev["eval"]["test"]["accuracy"] == res["eval"]["test"]["accuracy"]
    mid, _ = evaluate_adapter(str(out / "adapter"), device="cpu", output=str(tmp_path / "m"),
                              volume={"slices": "middle"})
    assert mid["eval"]["test"]["n"] == 2
