"""The served model's building blocks without a server: deterministic tiny backbones, input handling
(paths and arrays), the pyfunc folder (code + JSON + safetensors, optional bundled backbone) and its checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tracking_synth import CLASSES, _pattern, write_dicom, write_png

from medclipsvd.errors import AdapterMismatchError, DataError
from medclipsvd.serving.inputs import PathPolicy

TEMPLATE = "a photo of a {}."


@pytest.mark.parametrize("name", ["tiny-biomedclip", "tiny-clip"])
def test_tiny_backbones_are_deterministic(name):
    """The pyfunc rebuilds tiny backbones from their name: every build must give the same weights."""
    from medclipsvd.backbones import load_backbone

    a, b = load_backbone(name), load_backbone(name)
    assert a.fingerprint() == b.fingerprint()
    assert load_backbone(name, random_init=True, seed=5).fingerprint() != a.fingerprint()


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A tiny-biomedclip σ-adapter with perturbed σ (so it differs from the base), saved to disk."""
    import torch

    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import adapt, save_adapter, sigma_parameters

    bb = load_backbone("tiny-biomedclip")
    adapt(bb, "paper")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in sigma_parameters(bb).values():
            p.mul_(1 + 0.2 * torch.rand(p.shape, generator=gen))
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    save_adapter(bb, folder)
    return folder


@pytest.fixture(scope="module")
def predictor(adapted, tmp_path_factory):
    from medclipsvd.serving.predictor import Predictor
    from medclipsvd.tracking.registry import build_model_config

    config = build_model_config(adapted, {"classnames": list(CLASSES), "template": TEMPLATE}, "run-x")
    path = tmp_path_factory.mktemp("cfg") / "model_config.json"
    path.write_text(json.dumps(config))
    return Predictor.from_files(path, adapted, paths=PathPolicy.local())  # local use: any path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    img = _pattern(1, 3)
    return {"png": write_png(d / "a.png", img), "dcm": write_dicom(d / "a.dcm", img), "img": img}


def test_array_inputs_match_files(predictor, images):
    from medclipsvd.data import read_image

    img8 = (images["img"] * 255).astype(np.uint8)
    from_png = predictor.predict_proba([str(images["png"])])
    cases = {
        "uint8 HxW": img8,
        "uint8 HxWx3": np.repeat(img8[:, :, None], 3, axis=2),
        "uint8 HxWx4 (alpha dropped)": np.dstack([img8, img8, img8, np.full_like(img8, 255)]),
        "float [0,1]": img8.astype(np.float32) / 255.0,
        "nested lists (JSON)": (img8.astype(np.float64) / 255.0).tolist(),
    }
    for label, arr in cases.items():
        np.testing.assert_allclose(predictor.predict_proba([arr]), from_png, atol=1e-6, err_msg=label)
    # DICOM path == its decoded pixels given as an array
    dcm = read_image(str(images["dcm"]))
    np.testing.assert_allclose(predictor.predict_proba([str(images["dcm"])]), predictor.predict_proba([dcm]),
                               atol=1e-6)
    # raw intensities (CT-like, outside [0, 1]) are min/max scaled
    hu = images["img"] * 2000.0 - 1000.0
    np.testing.assert_allclose(predictor.predict_proba([hu]), predictor.predict_proba([images["img"]]), atol=1e-5)


def test_predict_frame_columns(predictor, images):
    import pandas as pd

    out = predictor.predict_frame(pd.DataFrame({"image": [str(images["png"]), str(images["dcm"])]}))
    assert list(out.columns) == ["label", "label_index", "score", "prob_benign", "prob_malignant"]
    probs = out[["prob_benign", "prob_malignant"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert list(out["label"]) == [CLASSES[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(out["score"], probs.max(1))
    # a differently named first column is used as the image column
    other = predictor.predict_frame(pd.DataFrame({"scan": [str(images["png"])]}))
    # Scored alone vs in a batch of two: float32 matmuls take different kernel/blocking paths with batch
    # size and thread count, so results differ by a few ulp (seen: 5.96e-08 on probabilities near 0.5,
    # i.e. 1.2e-7 relative, above assert_allclose's default rtol=1e-7). 1e-6 absolute is ~16 float32 ulp
    # at 0.5 and still far below any difference a real bug would cause.
    np.testing.assert_allclose(other["prob_benign"], out["prob_benign"][:1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, 4, 5)), "expected HxW"),
    (np.zeros((8, 8, 2)), "expected HxW"),
    (np.array([np.nan, 1.0] * 32).reshape(8, 8), "NaN"),
    ("/no/such/file.dcm", "not found"),
])
def test_bad_inputs_raise_clear_errors(predictor, bad, message):
    with pytest.raises(DataError, match=message):
        predictor.predict_proba([bad])


def _pyfunc_dir(adapted, tmp_path, bundle: bool):
    from medclipsvd.tracking.registry import _bundle, build_model_config, save_pyfunc

    config = build_model_config(adapted, {"classnames": list(CLASSES), "template": TEMPLATE}, "run-x")
    work = tmp_path / ("bundled" if bundle else "plain")
    work.mkdir()
    extra = _bundle(config, work / "bundle", None, None) if bundle else None
    return save_pyfunc(config, adapted, work, extra)


def test_pyfunc_folder_bundled_and_plain(adapted, predictor, images, tmp_path):
    import mlflow
    import pandas as pd
    from safetensors.torch import load_file, save_file

    img8 = (images["img"] * 255).astype(np.uint8)
    frame = pd.DataFrame({"image": [str(images["png"]), str(images["dcm"]), img8]})  # paths and arrays mixed
    expected = predictor.predict_frame(frame)
    np.testing.assert_allclose(expected.iloc[2, 3:].to_numpy(float), expected.iloc[0, 3:].to_numpy(float), atol=1e-6)
    for bundle in (False, True):
        folder = _pyfunc_dir(adapted, tmp_path, bundle)
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert ("artifacts/backbone.safetensors" in files) == bundle
        assert all(f.endswith((".json", ".safetensors", ".py", ".yaml", ".txt", "MLmodel")) for f in files), files
        # the images' folder as the serving root (load-time override): served models read no other path
        root = str(images["png"].parent)
        got = mlflow.pyfunc.load_model(str(folder), model_config={"serve_root": root}).predict(frame)
        pd.testing.assert_frame_equal(got, expected, atol=1e-6)
    # the bundled weights are what gets loaded, and they are checked against the adapter's fingerprint
    weights = folder / "artifacts" / "backbone.safetensors"
    state = load_file(str(weights))
    key = sorted(state)[0]
    state[key] = state[key] + 1.0
    save_file(state, str(weights))
    with pytest.raises(AdapterMismatchError, match="fingerprint"):
        mlflow.pyfunc.load_model(str(folder))


def test_model_config_rejects_other_files(tmp_path):
    from medclipsvd.errors import MedClipSVDError
    from medclipsvd.serving.trained_run import load_model_config

    bad = tmp_path / "model_config.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(MedClipSVDError, match="not a medclipsvd model configuration"):
        load_model_config(bad)
    with pytest.raises(MedClipSVDError, match="cannot read"):
        load_model_config(tmp_path / "missing.json")


@pytest.mark.parametrize("record", ["adapter_config.json", "method.json"])  # the one format; before 0.3
def test_registry_source_of_baseline_adapters(tmp_path, record):
    """LoRA/full adapters name their base too; the source comes from the run's settings."""
    from medclipsvd.serving.trained_run import _base_of

    d = tmp_path / "adapter"
    d.mkdir()
    (d / record).write_text(json.dumps({"method": "lora", "backbone": "tiny-clip", "fingerprint": "f" * 32}))
    method, base = _base_of(d, {"backbone_kwargs": {}})
    assert (method, base["name"], base["source"]) == ("lora", "tiny-clip", "random-init:seed=0")
    _, base = _base_of(d, {"backbone_kwargs": {"weights": "local-dir:/models/x"}})
    assert base["source"] == "local-dir:/models/x"


def test_nifti_and_jpeg_paths(predictor, images, tmp_path):
    """NIfTI volumes (read as volumes with the model's view settings, as hospital training reads them: middle
    axial slice by default, or the `index` column) and JPEG files are read by path."""
    import nibabel as nib
    import pandas as pd
    from PIL import Image

    from medclipsvd.data import read_image
    from medclipsvd.data.inputs import read_input_views

    vol = np.stack([images["img"] * (k + 1) * 100.0 for k in range(5)], axis=2).astype(np.float32)
    nii = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(nii))
    jpg = tmp_path / "a.jpg"
    Image.fromarray((images["img"] * 255).astype(np.uint8)).save(jpg, quality=95)
    out = predictor.predict_frame(pd.DataFrame({"image": [str(nii), str(nii), str(jpg)], "index": [None, 0, None]}))
    np.testing.assert_allclose(out.iloc[0, 3:].to_numpy(float),
                               predictor.predict_proba(read_input_views(nii, predictor.view))[0],
                               atol=1e-6)
    np.testing.assert_allclose(out.iloc[1, 3:].to_numpy(float),
                               predictor.predict_proba(read_input_views(nii, predictor.view, 0))[0],
                               atol=1e-6)
    np.testing.assert_allclose(out.iloc[2, 3:].to_numpy(float), predictor.predict_proba([read_image(str(jpg))])[0],
                               atol=1e-6)
