"""`medclipsvd export --format monai-bundle`: the bundle's layout and metadata, MONAI's own runner in a fresh
process reproducing `medclipsvd predict` (synthetic NIfTI and DICOM series, the real series when present),
no patient tag anywhere in the bundle or its outputs, and one-line errors for bad requests."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from volume_synth import PATIENT_NEEDLES, write_nifti, write_series

from medclipsvd.engine.synthetic import fake_tag_values

REPO = Path(__file__).resolve().parents[2]
VOLUMES = REPO.parent / "shared" / "data" / "volumes"
REAL_INPUTS = [VOLUMES / "ct_headneck_series_3", VOLUMES / "nifti" / "mr_abdomen_totalsegmentator_small.nii.gz"]
VIEW_FLAGS = ["--slices", "slices:3", "--window", "lung"]


def cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from medclipsvd.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medclipsvd", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def bundle(trained_adapter, tmp_path_factory) -> Path:
    from medclipsvd.export.monai_bundle import export_monai_bundle

    out = tmp_path_factory.mktemp("bundle") / "ct-bundle"
    return export_monai_bundle(trained_adapter, out, slices="slices:3", window="lung")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """A synthetic CT NIfTI (HU gradient + a bright disc), a synthetic DICOM series with fake patient tags, and
    the real series / NIfTI when ../shared/data/volumes is present."""
    d = tmp_path_factory.mktemp("inputs")
    z, y, x = np.mgrid[0:12, 0:40, 0:48]
    hu = -900.0 + 40.0 * z + 10.0 * x + 800.0 * (((y - 20) ** 2 + (x - 24) ** 2) < 64)
    nifti = write_nifti(d / "ct_synthetic.nii.gz", hu.transpose(2, 1, 0).astype(np.int16), spacing=(0.8, 0.8, 2.5))
    series = d / "study" / "series"
    series.mkdir(parents=True)
    write_series(series, n=8, rows=32, cols=36)
    return [nifti, series, *[p for p in REAL_INPUTS if p.exists()]]


def test_bundle_layout_and_metadata(bundle, trained_adapter):
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.safetensors", "docs/README.md"):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    results = json.loads((trained_adapter.parent / "results.json").read_text())
    classes = results["classnames"]
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {str(i): c for i, c in enumerate(classes)}
    assert meta["medclipsvd"]["backbone"] == "tiny-clip" and meta["medclipsvd"]["view"]["slices"] == "slices:3"
    for key in ("version", "monai_version", "pytorch_version", "required_packages_version", "task"):
        assert key in meta
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    targets = [t["_target_"] for t in inference["preprocessing"]["transforms"]]
    assert targets == ["medclipsvd.export.runtime.LoadInputd", "monai.transforms.ScaleIntensityRanged",
                       "medclipsvd.export.runtime.ClipEvalTransformd"]
    assert "medclipsvd" in (bundle / "docs" / "README.md").read_text()
    # no pickle anywhere: safetensors holds the weights
    assert not list(bundle.rglob("*.pt")) and not list(bundle.rglob("*.pkl"))


def test_bundle_in_fresh_process_matches_predict(bundle, trained_adapter, inputs, tmp_path, monkeypatch, capsys):
    """`python -m monai.bundle run` (MONAI's runner, a new process, run from elsewhere with --bundle_root) gives
    the probabilities of `medclipsvd predict --adapter` within 1e-4; no patient tag in anything it writes."""
    out_dir = tmp_path / "bundle-out"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--input", json.dumps([str(p) for p in inputs]),
         "--output_dir", str(out_dir), "--device", "$torch.device('cpu')"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    bundle_preds = json.loads((out_dir / "predictions.json").read_text())["predictions"]
    assert [p["input"] for p in bundle_preds] == [str(p) for p in inputs]

    csv = tmp_path / "predict.csv"
    code, _, err = cli(["predict", "--adapter", str(trained_adapter), *VIEW_FLAGS, *map(str, inputs),
                        "--output", str(csv)], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    frame = pd.read_csv(csv)
    classes = list(bundle_preds[0]["probabilities"])
    ours = frame[[f"prob_{c}" for c in classes]].to_numpy()
    theirs = np.array([[p["probabilities"][c] for c in classes] for p in bundle_preds])
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    assert all(len(p["views"]) == 3 for p in bundle_preds)  # slices:3 -> three views averaged
    assert list(frame["label"]) == [p["label"] for p in bundle_preds]

    written = log + (out_dir / "predictions.json").read_text()
    for needle in PATIENT_NEEDLES:
        assert needle not in written


def test_bundle_carries_no_patient_tags(bundle, trained_adapter):
    """The training DICOMs carried fake patient tags: none of them (nor the data root) is in any bundle file."""
    needles = [*fake_tag_values(20), *PATIENT_NEEDLES]
    data_root = json.loads((trained_adapter.parent / "results.json").read_text())["run"]["data_root"]
    for f in bundle.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            for needle in [*needles, data_root]:
                assert needle.encode() not in blob, f"{needle!r} in {f}"


def test_exported_settings_default_to_the_training_run(trained_adapter, tmp_path):
    from medclipsvd.export.monai_bundle import export_monai_bundle

    out = export_monai_bundle(trained_adapter, tmp_path / "b", check=False)
    loader = json.loads((out / "configs" / "inference.json").read_text())["preprocessing"]["transforms"][0]
    run = json.loads((trained_adapter.parent / "results.json").read_text())["run"]
    assert {k: loader[k] for k in ("slices", "window", "axis")} == {
        "slices": run.get("slices", "middle"), "window": run.get("window"), "axis": run.get("axis", "axial")}


def _copy_run(adapter: Path, dest: Path) -> Path:
    shutil.copytree(adapter.parent / "adapter", dest / "adapter")
    shutil.copy(adapter.parent / "results.json", dest / "results.json")
    return dest / "adapter"


def test_bad_export_requests_are_one_line_errors(trained_adapter, tmp_path, monkeypatch, capsys):
    tampered = _copy_run(trained_adapter, tmp_path / "other")
    cfg = json.loads((tampered / "adapter_config.json").read_text())
    cfg["backbone"]["fingerprint"] = "0" * 64  # made from other base weights
    (tampered / "adapter_config.json").write_text(json.dumps(cfg))
    no_results = _copy_run(trained_adapter, tmp_path / "bare")
    (no_results.parent / "results.json").unlink()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    out = str(tmp_path / "out")
    cases = [
        (["--adapter", str(trained_adapter), "--backbone", "tiny-biomedclip", "--output", out],
         "made for backbone 'tiny-clip', not 'tiny-biomedclip'"),
        (["--adapter", str(tampered), "--output", out], "was made for backbone 'tiny-clip'"),
        (["--adapter", str(no_results), "--output", out], "results.json is missing"),
        (["--adapter", str(tmp_path / "nope"), "--output", out], "does not exist"),
        (["--adapter", str(trained_adapter), "--output", str(taken)], "not empty"),
        (["--adapter", str(trained_adapter), "--format", "onnx", "--output", out], "--format 'onnx'"),
        (["--adapter", str(trained_adapter), "--window", "nonsense", "--output", out], "nonsense"),
    ]
    for argv, expected in cases:
        code, _, err = cli(["export", *argv], monkeypatch, capsys)
        err = err.strip()
        assert code == 2 and expected in err and "Traceback" not in err and len(err.splitlines()) == 1, (argv, err)
    assert (taken / "keep.txt").read_text() == "mine" and not (tmp_path / "out").exists()


def test_predict_needs_model_or_adapter(tmp_path, monkeypatch, capsys):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    code, _, err = cli(["predict", str(img)], monkeypatch, capsys)
    assert code == 2 and "either --model" in err and "Traceback" not in err
