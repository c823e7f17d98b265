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
    ([{"name": "ScaleIntensityRangedd"}], "unknown MONAI transform 'ScaleIntensityRangedd'; did you mean "
                                          "ScaleIntensityRanged"),
    ([{"name": "NoSuchTransform"}], "unknown MONAI transform 'NoSuchTransform'"),
    ([{"name": "ScaleIntensityRange", "args": {"a_min": 0, "a_max": 1}}],
     "array transform; use the dictionary version ScaleIntensityRanged"),
    ([{"name": "ScaleIntensityRanged", "args": {"a_minn": 0, "a_max": 1}}],
     "unknown argument(s) 'a_minn' (did you mean 'a_min'"),
    ([{"name": "ScaleIntensityRanged", "args": {"a_max": 1}}], "missing a required argument: 'a_min'"),
    ([{"name": "Rotate90d", "args": {"k": "x"}}], "(Rotate90d)"),
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
            "from medclipsvd.engine.run import spec_from_pipeline, _transforms\n"
            "from medclipsvd.backbones import load_backbone\n"
            "spec = spec_from_pipeline('demo', data_root='.', output='x')\n"
            "_transforms(spec, load_backbone('tiny-clip'), 'custom')\n"
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
    from medclipsvd.engine.run import _transforms, spec_from_pipeline

    bb = load_backbone("tiny-clip")
    spec = spec_from_pipeline(pipeline, data_root=".", output="x")
    assert spec.preprocess == []
    train_tf, eval_tf = _transforms(spec, bb, spec.dataset)
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
