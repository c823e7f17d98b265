"""MONAI dictionary transforms declared in a pipeline's `preprocess:` (medclipsvd/data/preprocess.py): checked
at load (one-line errors naming the file), applied before the standard transforms, which stay bit-identical
when no preprocess is declared; run-time failures name the transform, the pipeline and the image."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from medclipsvd.engine.config import ConfigError, load_pipeline

REPO = Path(__file__).resolve().parents[2]
BUSI = REPO.parent / "shared" / "data" / "biomedical" / "BUSI"


def _pipeline(tmp_path: Path, steps, name: str = "pre") -> Path:
    base = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    base.update(name=name, preprocess=steps)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("steps,expected", [
    ([{"name": "ScaleIntensityRangedd"}], "preprocess step 1 'ScaleIntensityRangedd' is not allowed (did you mean "
                                          "ScaleIntensityRanged"),
    ([{"name": "NoSuchTransform"}], "preprocess step 1 'NoSuchTransform' is not allowed; allowed: Identityd, "),
    ([{"name": "ScaleIntensityRange", "args": {"a_min": 0, "a_max": 1}}],
     "array transform: use the dictionary version ScaleIntensityRanged"),
    ([{"name": "ScaleIntensityRanged", "args": {"a_minn": 0, "a_max": 1}}],
     "argument 'a_minn' is not allowed (did you mean 'a_min'?)"),
    ([{"name": "ScaleIntensityRanged", "args": {"a_max": 1}}], "missing required argument(s) a_min"),
    ([{"name": "Rotate90d", "args": {"k": "x"}}], "'Rotate90d': argument 'k' must be an integer"),
    ([{"name": "Identityd"}, {"name": "Rotate90d", "args": {"k": 1.5}}], "preprocess step 2 'Rotate90d'"),
    ([{"name": "Identityd", "args": [1, 2]}], "args"),
    ([{"name": "Identityd", "arg": {}}], "arg"),
])
def test_bad_steps_are_one_line_errors_naming_the_file(tmp_path, steps, expected):
    path = _pipeline(tmp_path, steps)
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(path))
    msg = str(e.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_pipeline_without_preprocess_does_not_import_monai():
    code = ("import sys\nfrom medclipsvd.engine.config import load_pipeline\n"
            "from medclipsvd.engine.pipeline_spec import spec_from_pipeline\n"
            "from medclipsvd.engine.steps import transforms_for\n"
            "from medclipsvd.backbones import load_backbone\n"
            "spec = spec_from_pipeline('demo', data_root='.', output='x')\n"
            "transforms_for(spec, load_backbone('tiny-clip'), 'custom')\n"
            "assert spec.preprocess == [] and 'monai' not in sys.modules, "
            "sorted(m for m in sys.modules if 'monai' in m)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _images() -> list[np.ndarray]:
    """An 8-bit RGB image, a deep grey image (DICOM-like) and, with the real data, BUSI images."""
    from medclipsvd.data import read_image

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (37, 52, 3)).astype(np.float32) / np.float32(255),
            np.repeat(rng.random((61, 45), dtype=np.float32)[:, :, None], 3, axis=2)]
    if BUSI.is_dir():
        imgs += [read_image(str(p)) for p in sorted(BUSI.rglob("*.png"))[:3]]
    return imgs


@pytest.mark.parametrize("pipeline", ["breast_ultrasound", "chest_xray"])
def test_reference_transforms_unchanged_without_preprocess(pipeline):
    """The engine's train/eval transforms of a benchmark pipeline (no `preprocess:`) give exactly the pixels of
    the reference transforms; an identity MONAI preprocess does too (the dict/channel round trip is lossless)."""
    import torch

    from medclipsvd.backbones import load_backbone
    from medclipsvd.data import build_transform, dataset_info
    from medclipsvd.data.preprocess import with_preprocess
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.steps import transforms_for

    bb = load_backbone("tiny-clip")
    spec = spec_from_pipeline(pipeline, data_root=".", output="x")
    assert spec.preprocess == []
    train_tf, eval_tf = transforms_for(spec, bb, spec.dataset)
    hflip = dataset_info(spec.dataset).hflip
    ref_eval = build_transform(bb.image_size, bb.mean, bb.std, train=False)
    ref_train = build_transform(bb.image_size, bb.mean, bb.std, train=True, hflip=hflip)
    ident_eval = with_preprocess(ref_eval, [{"name": "Identityd"}])
    for img in _images():
        ref = ref_eval(img)
        assert torch.equal(eval_tf(img), ref)
        assert torch.equal(ident_eval(img), ref)
        for seed in (3, 11):
            train_tf.reseed(seed)
            ref_train.reseed(seed)
            assert torch.equal(train_tf(img), ref_train(img))


def test_preprocess_runs_before_the_standard_transform():
    from medclipsvd.data import build_transform
    from medclipsvd.data.preprocess import with_preprocess

    eval_tf = build_transform(32, train=False)
    invert = with_preprocess(eval_tf, [{"name": "ScaleIntensityRanged",
                                        "args": {"a_min": 0.0, "a_max": 1.0, "b_min": 1.0, "b_max": 0.0}}])
    for img in _images()[:2]:
        np.testing.assert_allclose(invert(img).numpy(), eval_tf(1.0 - img).numpy(), atol=1e-5)


def test_random_preprocess_is_seeded_per_sample_and_training_only():
    import torch
    from monai.transforms import Compose, RandGaussianNoised

    from medclipsvd.data import build_transform
    from medclipsvd.data.preprocess import with_preprocess

    noise = Compose([RandGaussianNoised(keys="image", prob=1.0)])
    tf = with_preprocess(build_transform(32, train=False), noise, train=True)
    img = _images()[1]
    tf.reseed(5)
    a = tf(img)
    tf.reseed(5)
    assert torch.equal(tf(img), a)
    tf.reseed(6)
    assert not torch.equal(tf(img), a)
    # evaluation keeps only deterministic transforms: random ones are augmentation
    ref = build_transform(32, train=False)
    assert with_preprocess(ref, noise) is ref


def test_run_time_failure_names_transform_pipeline_and_image(tmp_path):
    from medclipsvd.data import ImageDataset, Sample, build_transform
    from medclipsvd.data.preprocess import PreprocessError, build_preprocess, with_preprocess

    png = tmp_path / "scan.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    pre = build_preprocess([{"name": "SpatialPadd", "args": {"spatial_size": [4, 4, 4]}}], source="x.yaml")
    ds = ImageDataset([Sample(str(png), 0, "a")], with_preprocess(build_transform(16, train=False), pre))
    with pytest.raises(PreprocessError) as e:
        ds[0]
    msg = str(e.value)
    assert "SpatialPadd" in msg and "x.yaml" in msg and str(png) in msg and "\n" not in msg


def test_cli_train_with_preprocess_and_runtime_failure(tmp_path, monkeypatch, capsys):
    """`train --pipeline file.yaml`: a valid preprocess trains and is recorded; a transform failing on the
    images stops the run with one line (exit 2) naming transform, pipeline file and image."""
    import json

    from medclipsvd.cli.app import main
    from medclipsvd.engine.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", patients_per_class=3, images_per_patient=1, size=24)
    monkeypatch.chdir(tmp_path)
    good = _pipeline(tmp_path, [{"name": "ScaleIntensityRanged",
                                 "args": {"a_min": 0.0, "a_max": 1.0, "b_min": 0.1, "b_max": 0.9}},
                                {"name": "RandGaussianNoised", "args": {"prob": 0.5, "std": 0.01}}], "good")
    bad = _pipeline(tmp_path, [{"name": "SpatialPadd", "args": {"spatial_size": [4, 4, 4]}}], "bad")
    common = ["--data-root", str(data), "--backbone", "tiny-clip", "--shots", "1", "--max-steps", "2",
              "--device", "cpu", "--no-mlflow"]
    monkeypatch.setattr(sys, "argv", ["medclipsvd", "train", "--pipeline", str(good), "--output", "ok", *common])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0, capsys.readouterr().err[-2000:]
    run = json.loads((tmp_path / "ok" / "results.json").read_text())["run"]
    assert [s["name"] for s in run["preprocess"]] == ["ScaleIntensityRanged", "RandGaussianNoised"]
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["medclipsvd", "train", "--pipeline", str(bad), "--output", "bad", *common])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # the progress bar stays above it
    assert len(errors) == 1, err
    assert "SpatialPadd" in errors[0] and str(bad) in errors[0] and str(data) in errors[0]


def test_api_accepts_a_monai_compose(tmp_path):
    from monai.transforms import Compose, ScaleIntensityRanged

    from medclipsvd import api
    from medclipsvd.engine.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", patients_per_class=3, images_per_patient=1, size=24)
    splits = api.load_dataset("custom", data)
    few = api.few_shot(splits, k=1)
    compose = Compose([ScaleIntensityRanged(keys="image", a_min=0.0, a_max=1.0, b_min=1.0, b_max=0.0)])
    bb = api.load_backbone("tiny-clip")
    res = api.train(bb, few, steps=2, batch_size=4, device="cpu", progress=False, preprocess=compose)
    assert res.steps == 2
    m_pre = api.evaluate(bb, splits.test, splits.classnames, device="cpu", preprocess=compose)
    m_ref = api.evaluate(bb, splits.test, splits.classnames, device="cpu")
    assert m_pre["n"] == m_ref["n"] == len(splits.test)
    p_pre = api.predict(bb, [splits.test[0].path], splits.classnames, device="cpu", preprocess=compose)
    p_ref = api.predict(bb, [splits.test[0].path], splits.classnames, device="cpu")
    assert p_pre[0]["probabilities"] != p_ref[0]["probabilities"]  # the inversion reached the model


def test_cli_bad_transform_fails_before_any_work(tmp_path, monkeypatch, capsys):
    from medclipsvd.cli.app import main

    bad = _pipeline(tmp_path, [{"name": "ScaleIntensityRanged", "args": {"a_minn": 0, "a_max": 1}}], "typo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["medclipsvd", "train", "--pipeline", str(bad), "--data-root", str(tmp_path),
                                      "--output", "out", "--no-mlflow"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "a_minn" in err and str(bad) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the allow-list and typed arguments
# Arguments each allowed transform is exercised with (its required ones, plus a few others).
EXAMPLES = {
    "Identityd": {},
    "ScaleIntensityRanged": {"a_min": 0, "a_max": 1, "b_min": 0.1, "b_max": 0.9, "clip": True},
    "ScaleIntensityd": {"minv": 0.0, "maxv": 1.0},
    "ScaleIntensityRangePercentilesd": {"lower": 5, "upper": 95, "b_min": 0.0, "b_max": 1.0, "clip": True},
    "ClipIntensityPercentilesd": {"lower": 5, "upper": 95},
    "NormalizeIntensityd": {"channel_wise": True},
    "ThresholdIntensityd": {"threshold": 0.5, "above": True, "cval": 0.0},
    "AdjustContrastd": {"gamma": 1.5},
    "ShiftIntensityd": {"offset": 0.1},
    "HistogramNormalized": {"num_bins": 64, "min": 0, "max": 1},
    "GaussianSmoothd": {"sigma": 1.0},
    "GaussianSharpend": {"sigma1": 2.0, "sigma2": 1.0, "alpha": 10.0},
    "MedianSmoothd": {"radius": 1},
    "RandGaussianNoised": {"prob": 1.0, "std": 0.05},
    "RandRicianNoised": {"prob": 1.0, "std": 0.05},
    "RandScaleIntensityd": {"factors": 0.1, "prob": 1.0},
    "RandShiftIntensityd": {"offsets": [-0.1, 0.1], "prob": 1.0},
    "RandStdShiftIntensityd": {"factors": 0.1, "prob": 1.0},
    "RandAdjustContrastd": {"prob": 1.0, "gamma": [0.8, 1.2]},
    "RandGaussianSmoothd": {"prob": 1.0, "sigma_x": [0.5, 1.0], "sigma_y": [0.5, 1.0]},
    "RandHistogramShiftd": {"prob": 1.0, "num_control_points": 5},
    "RandBiasFieldd": {"prob": 1.0, "degree": 3, "coeff_range": [0.0, 0.1]},
    "RandCoarseDropoutd": {"holes": 2, "spatial_size": 4, "prob": 1.0},
    "Rotate90d": {"k": 1},
    "Flipd": {"spatial_axis": 1},
    "Rotated": {"angle": 0.3},
    "Zoomd": {"zoom": 1.5},
    "Resized": {"spatial_size": [20, 24]},
    "Affined": {"rotate_params": 0.2, "scale_params": [1.1, 1.1], "padding_mode": "zeros"},
    "RandRotate90d": {"prob": 1.0, "max_k": 3},
    "RandFlipd": {"prob": 1.0, "spatial_axis": 0},
    "RandAxisFlipd": {"prob": 1.0},
    "RandRotated": {"range_x": 0.3, "prob": 1.0},
    "RandZoomd": {"prob": 1.0, "min_zoom": 0.9, "max_zoom": 1.1},
    "RandAffined": {"prob": 1.0, "rotate_range": 0.2, "translate_range": [2, 2]},
    "Rand2DElasticd": {"spacing": [8, 8], "magnitude_range": [0.5, 1.0], "prob": 1.0},
    "SpatialPadd": {"spatial_size": [40, 48]},
    "BorderPadd": {"spatial_border": 2},
    "DivisiblePadd": {"k": 16},
    "CenterSpatialCropd": {"roi_size": [16, 16]},
    "SpatialCropd": {"roi_start": [2, 2], "roi_end": [20, 20]},
    "ResizeWithPadOrCropd": {"spatial_size": [30, 30]},
    "CenterScaleCropd": {"roi_scale": 0.5},
    "CropForegroundd": {"source_key": "image", "margin": 1},
    "RandSpatialCropd": {"roi_size": [16, 16]},
    "RandScaleCropd": {"roi_scale": 0.5},
}

# Parameters through which MONAI resolves or calls code: none may ever be on the allow-list.
CODE_PARAMETERS = {"reader", "func", "inv_func", "select_fn", "writer", "output_postfix", "device", "dtype",
                   "lazy", "allow_missing_keys", "meta_keys", "factor_key", "mask_key", "mask", "affine",
                   "roi_slices", "start_coord_key", "end_coord_key"}


def test_allow_list_names_monai_dictionary_transforms_without_code_arguments():
    import inspect

    import monai.transforms as mt

    from medclipsvd.data.preprocess_steps import ALLOWED

    assert set(EXAMPLES) == set(ALLOWED), "every allowed transform needs an example above"
    for name in ("LoadImaged", "Lambdad", "RandLambdad", "SaveImaged", "CopyItemsd", "DeleteItemsd",
                 "ConcatItemsd", "Compose", "Lambda"):
        assert name not in ALLOWED
    for name, spec in ALLOWED.items():
        cls = getattr(mt, name)
        assert inspect.isclass(cls) and issubclass(cls, mt.MapTransform), name
        params = inspect.signature(cls.__init__).parameters
        for arg in spec:
            assert arg in params, f"{name} has no parameter {arg!r} in this MONAI"
            assert "Callable" not in str(params[arg].annotation), (name, arg)
            assert arg not in CODE_PARAMETERS, (name, arg)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_allowed_transform_builds_runs_and_matches_monai(name):
    """Built through the allow-list, each transform gives exactly what the MONAI class built directly with the
    same arguments gives (what medclipsvd built before the allow-list), on a reader-shaped sample."""
    import torch
    from monai.transforms import Randomizable
    from monai.utils import convert_to_numpy

    import monai.transforms as mt
    from medclipsvd.data.preprocess import build_preprocess

    rng = np.random.default_rng(3)
    img = rng.random((28, 34, 3), dtype=np.float32)
    img[:3] = 0.0  # a dark border, for CropForegroundd
    pre = build_preprocess([{"name": name, "args": EXAMPLES[name]}], source="x.yaml")
    pre.set_random_state(7)
    ours = pre(img)
    direct = getattr(mt, name)(keys="image", **EXAMPLES[name])
    if isinstance(direct, Randomizable):
        direct.set_random_state(seed=7 * 1009 % 2 ** 32)
    ref = convert_to_numpy(direct({"image": torch.from_numpy(img.transpose(2, 0, 1).copy())})["image"],
                           dtype=np.float32)
    ref = np.repeat(ref, 3, axis=0) if ref.shape[0] == 1 else ref
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, ref.transpose(1, 2, 0), rtol=0, atol=1e-6)


def test_allowed_transforms_compute_what_they_name():
    """Independent numpy expectations for a few deterministic steps (and a chain of them, in order)."""
    from medclipsvd.data.preprocess import build_preprocess

    img = np.random.default_rng(5).random((20, 30, 3), dtype=np.float32)
    chw = img.transpose(2, 0, 1)

    def run(*steps):
        return build_preprocess([{"name": n, "args": a} for n, a in steps])(img).transpose(2, 0, 1)

    np.testing.assert_allclose(run(("ScaleIntensityRanged", {"a_min": 0.2, "a_max": 0.8, "b_min": 0.0,
                                                             "b_max": 1.0, "clip": True})),
                               np.clip((chw - 0.2) / 0.6, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(run(("Flipd", {"spatial_axis": 1})), chw[:, :, ::-1])
    np.testing.assert_array_equal(run(("Rotate90d", {"k": 1})), np.rot90(chw, 1, axes=(1, 2)))
    np.testing.assert_array_equal(run(("CenterSpatialCropd", {"roi_size": [10, 10]})), chw[:, 5:15, 10:20])
    np.testing.assert_array_equal(run(("SpatialPadd", {"spatial_size": [24, 30]})),
                                  np.pad(chw, ((0, 0), (2, 2), (0, 0))))
    np.testing.assert_allclose(run(("ShiftIntensityd", {"offset": 0.25}), ("Flipd", {"spatial_axis": 0})),
                               chw[:, ::-1, :] + 0.25, atol=1e-6)


@pytest.mark.parametrize("step,expected", [
    ({"name": "subprocess.run", "args": {"args": ["touch", "x"]}}, "'subprocess.run' is not allowed"),
    ({"name": "os.system"}, "'os.system' is not allowed"),
    ({"name": "LoadImaged", "args": {"keys": "image", "reader": "subprocess.run"}}, "'LoadImaged' is not allowed"),
    ({"name": "Lambdad", "args": {"keys": "image", "func": "$lambda d: d"}}, "'Lambdad' is not allowed"),
    ({"name": "Identityd", "args": {"func": "os.system"}}, "'Identityd': argument 'func' is not allowed"),
    ({"name": "ScaleIntensityRanged", "args": {"a_min": "os.system", "a_max": 1}},
     "argument 'a_min' must be a number, got 'os.system' (a name of code"),
    ({"name": "Zoomd", "args": {"zoom": 1.2, "mode": "monai.transforms.Lambda"}},
     "argument 'mode' must be one of nearest, nearest-exact, bilinear, bicubic, area, got 'monai.transforms.Lambda'"),
    ({"name": "Identityd", "args": {"keys": "$__import__('os')"}}, "argument 'keys' must be \"image\""),
    ({"name": "Resized", "args": {"spatial_size": "@network_def"}}, "(a name of code or a config expression"),
])
def test_steps_naming_code_are_refused_before_monai_is_touched(step, expected):
    from medclipsvd.data.preprocess_steps import PreprocessConfigError, validate_steps

    with pytest.raises(PreprocessConfigError) as e:
        validate_steps([{"name": "Identityd"}, step], source="run/results.json")
    msg = str(e.value)
    assert msg.startswith("run/results.json: preprocess step 2 ") and expected in msg and "\n" not in msg


@pytest.mark.parametrize("args,expected", [
    ({"a_min": "0", "a_max": 1}, "argument 'a_min' must be a number, got '0'"),         # a string, even numeric
    ({"a_min": True, "a_max": 1}, "argument 'a_min' must be a number, got True"),        # YAML yes/true
    ({"a_min": float("nan"), "a_max": 1}, "argument 'a_min' must be a number, got nan"),
    ({"a_min": [0], "a_max": 1}, "argument 'a_min' must be a number, got [0]"),
    ({"a_min": 0, "a_max": 1, "clip": "yes"}, "argument 'clip' must be true or false, got 'yes'"),
    ({"a_min": 0, "a_max": 1, "b_min": None, "dtype": "float64"}, "argument 'dtype' is not allowed"),
    ({"a_min": 0, "a_max": 1, "keys": ["image", "label"]}, "argument 'keys' must be \"image\""),
    ({"a_min": 0}, "missing required argument(s) a_max"),
])
def test_typed_arguments(args, expected):
    from medclipsvd.data.preprocess_steps import PreprocessConfigError, validate_steps

    with pytest.raises(PreprocessConfigError) as e:
        validate_steps([{"name": "ScaleIntensityRanged", "args": args}], source="p.yaml")
    assert expected in str(e.value) and "p.yaml: preprocess step 1 'ScaleIntensityRanged'" in str(e.value)


@pytest.mark.parametrize("name,args,expected", [
    ("Rotate90d", {"k": 1.0}, "must be an integer"),
    ("Resized", {"spatial_size": [224, 224, 3, 3]}, "(4 values)"),
    ("Resized", {"spatial_size": 100000}, "<= 4096"),
    ("Zoomd", {"zoom": 0}, "> 0"),
    ("RandGaussianNoised", {"prob": 1.5}, "<= 1"),
    ("RandAdjustContrastd", {"gamma": [2.0, 1.0]}, "(low > high)"),
    ("Rotate90d", {"spatial_axes": [0, 0]}, "two different spatial axes"),
    ("MedianSmoothd", {"radius": 100}, "<= 16"),
])
def test_bounds_and_shapes_of_arguments(name, args, expected):
    from medclipsvd.data.preprocess_steps import PreprocessConfigError, validate_steps

    with pytest.raises(PreprocessConfigError) as e:
        validate_steps([{"name": name, "args": args}])
    assert expected in str(e.value)


def test_valid_steps_are_normalised_and_checked_without_importing_monai():
    code = ("import sys\nfrom medclipsvd.data.preprocess_steps import validate_steps, PreprocessConfigError\n"
            "out = validate_steps([{'name': 'Resized', 'args': {'spatial_size': (32, 32)}}, "
            "{'name': 'RandAffined', 'args': {'rotate_range': [[0, 0.2], 0.1]}}])\n"
            "assert out == [{'name': 'Resized', 'args': {'spatial_size': [32, 32]}}, "
            "{'name': 'RandAffined', 'args': {'rotate_range': [[0, 0.2], 0.1]}}], out\n"
            "try:\n    validate_steps([{'name': 'LoadImaged', 'args': {'reader': 'os.system'}}])\n"
            "except PreprocessConfigError:\n    pass\nelse:\n    raise SystemExit('not refused')\n"
            "assert not [m for m in sys.modules if m.startswith(('monai', 'torch'))]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_too_many_steps_and_non_list_are_refused():
    from medclipsvd.data.preprocess_steps import MAX_STEPS, PreprocessConfigError, validate_steps

    with pytest.raises(PreprocessConfigError, match=f"at most {MAX_STEPS}"):
        validate_steps([{"name": "Identityd"}] * (MAX_STEPS + 1), source="x.json")
    with pytest.raises(PreprocessConfigError, match="must be a list of steps"):
        validate_steps("LoadImaged", source="x.json")


def test_docs_table_lists_the_allow_list():
    from medclipsvd.data.preprocess_steps import docs_table

    assert docs_table() in (REPO / "docs" / "monai.md").read_text(), \
        "docs/monai.md's allow-list table is stale: paste medclipsvd.data.preprocess_steps.docs_table() into it"
