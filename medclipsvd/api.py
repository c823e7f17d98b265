"""Notebook API: the CLI's steps as plain functions.

    from medclipsvd import api
    bb = api.load_backbone("biomedclip")
    splits = api.load_dataset("BUSI", "../shared/data/biomedical")
    few = api.few_shot(splits, k=16, seed=1)
    api.adapt(bb)                                   # σ-only, the paper preset
    api.train(bb, few, template="a photo of a {}.", lr=2e-3, epochs=100)
    metrics = api.evaluate(bb, splits.test, splits.classnames, template="a photo of a {}.")
    api.predict(bb, ["scan.png"], splits.classnames, template="a photo of a {}.")
    model = api.load_model("models:/chest-xray@champion")    # a registered model, its files verified
    model.predict_frame(pandas.DataFrame({"image": ["scan.png"]}))

See docs/python-api.md for a runnable example."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["load_backbone", "load_dataset", "few_shot", "adapt", "train", "evaluate", "predict", "merge",
           "save_adapter", "load_adapter", "load_model", "run_pipeline", "list_pipelines"]


def load_backbone(name: str, **kwargs):
    """A registered backbone (see `medclipsvd backbones`); kwargs: weights=, text_dir=, random_init=, device=."""
    from medclipsvd.backbones import load_backbone as _load

    return _load(name, **kwargs)


def load_dataset(name: str, root: str | Path, **kwargs):
    """DatasetSplits (.classnames, .train, .val, .test) of a registered dataset or "custom" (hospital folder/CSV)."""
    from medclipsvd.data import load_dataset as _load

    return _load(name, root, **kwargs)


def few_shot(splits, k: int, seed: int = 1):
    """K training images per class (and min(K, 4) validation), the reference's sampling; test untouched."""
    from medclipsvd.data import sample_few_shot

    return sample_few_shot(splits, k, seed)


def adapt(backbone, targets: Any = "paper"):
    """Make only the singular values of the targeted matrices trainable (in place); returns the backbone."""
    from medclipsvd.svd import adapt as _adapt

    return _adapt(backbone, targets)


def merge(backbone):
    """Fold the adapted σ into plain weights (inference then costs what the base model costs)."""
    from medclipsvd.svd import merge as _merge

    return _merge(backbone)


def save_adapter(backbone, directory: str | Path):
    from medclipsvd.svd import save_adapter as _save

    return _save(backbone, str(directory))


def load_adapter(backbone, directory: str | Path):
    from medclipsvd.svd import load_adapter as _load

    return _load(backbone, str(directory))


def train(backbone, splits, *, template: str = "a photo of a {}.", lr: float = 2e-3, epochs: int = 100,
          steps: int | None = None, batch_size: int = 32, weight_decay: float = 0.0, seed: int = 1,
          device: str = "auto", hflip: bool = True, progress: bool = True, checkpoint_dir: str | None = None,
          preprocess=None, precision: str = "auto"):
    """σ-only training of an adapted backbone (adapts it with the paper preset first if needed) on
    `splits.train` (e.g. the output of few_shot). Iterations: `steps`, or epochs x ceil(n / batch_size)
    as the reference counts them; cosine schedule over the run. Returns a TrainResult (losses, lrs, ...).

    `preprocess`: a `monai.transforms.Compose` of dictionary transforms (key "image", [3, H, W] in [0, 1])
    or a list of {"name", "args"} steps, run on each image before the standard augmentation; pass the same
    to `evaluate`/`predict`. Its random transforms (Rand*) are seeded per sample (reproducible runs) and,
    being augmentation, left out by `evaluate`/`predict`. `precision`: auto, fp32, bf16 or fp16, as the CLI's
    --precision (medclipsvd/device.py); the result's `precision` says what ran."""
    from medclipsvd.data import ImageDataset, build_transform
    from medclipsvd.device import precision_plan, resolve_device
    from medclipsvd.engine.trainer import TrainSettings
    from medclipsvd.engine.trainer import train as _train
    from medclipsvd.svd import adapt_state, adapted_modules, sigma_parameters

    plan = precision_plan(precision, resolve_device(device))
    if adapt_state(backbone) is None:
        adapt(backbone)
    total = steps or epochs * max(1, math.ceil(len(splits.train) / batch_size))
    tf = build_transform(backbone.image_size, backbone.mean, backbone.std, train=True, hflip=hflip)
    tf = _with_preprocess(tf, preprocess, train=True)
    settings = TrainSettings(lr=lr, total_steps=total, t_max=total, weight_decay=weight_decay,
                             batch_size=batch_size, seed=seed, device=device, progress=progress,
                             checkpoint_dir=checkpoint_dir, amp=plan.train)
    text = any(i.tower == "text" for i in adapted_modules(backbone).values())
    return _train(backbone, sigma_parameters(backbone), ImageDataset(splits.train, tf), list(splits.classnames),
                  template, settings, text_trainable=text)


def _with_preprocess(transform, preprocess, train: bool = False):
    if preprocess is None:  # the reference transform, untouched (MONAI not imported)
        return transform
    from medclipsvd.data.preprocess import with_preprocess

    return with_preprocess(transform, preprocess, train=train)


def _eval_dataset(backbone, samples, preprocess=None):
    from medclipsvd.data import ImageDataset, build_transform

    tf = build_transform(backbone.image_size, backbone.mean, backbone.std, train=False)
    return ImageDataset(samples, _with_preprocess(tf, preprocess), cache=False)


def evaluate(backbone, samples, classnames: Sequence[str], template: str = "a photo of a {}.",
             device: str = "auto", batch_size: int = 64, preprocess=None, precision: str = "auto") -> dict:
    """Accuracy, balanced accuracy, macro-F1, OvR AUROC, ECE, per-class accuracy, confusion matrix.
    `preprocess`: the MONAI Compose (or steps) the model was trained with, see `train`. `precision`: as in
    `train`."""
    from medclipsvd.device import precision_plan, resolve_device
    from medclipsvd.engine.evaluator import evaluate as _evaluate

    plan = precision_plan(precision, resolve_device(device))
    return _evaluate(backbone, _eval_dataset(backbone, samples, preprocess), list(classnames), template, device,
                     batch_size, precision=plan.eval_image)


def predict(backbone, images: Sequence, classnames: Sequence[str], template: str = "a photo of a {}.",
            device: str = "auto", preprocess=None, precision: str = "auto") -> list[dict]:
    """Class probabilities for image files (paths), PIL images, HxWx3 float arrays in [0, 1], or
    preprocessed [3, H, W] tensors. Returns [{"classname", "label", "probabilities": {name: p}}].
    `preprocess`: the MONAI Compose (or steps) the model was trained with (not applied to tensors)."""
    import numpy as np
    import torch

    from medclipsvd.backbones.head import class_logits
    from medclipsvd.data import build_transform
    from medclipsvd.engine.evaluator import check_finite_scores, text_features
    from medclipsvd.device import precision_plan, resolve_device
    from medclipsvd.engine.trainer import autocast_for

    dev = resolve_device(device)
    plan = precision_plan(precision, dev)
    tf = _with_preprocess(build_transform(backbone.image_size, backbone.mean, backbone.std, train=False),
                          preprocess)
    batch = []
    for im in images:
        if isinstance(im, torch.Tensor):
            batch.append(im)
            continue
        if isinstance(im, (str, Path)):
            arr = _read_input(im)
        elif hasattr(im, "convert"):  # PIL
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        else:
            arr = np.asarray(im, dtype=np.float32)
        batch.append(tf(arr))
    backbone.to(dev).eval()
    with torch.no_grad():
        txt = text_features(backbone, list(classnames), template, dev, plan.eval_text)
        with autocast_for(dev, plan.eval_image):
            img = backbone.encode_image(torch.stack(batch).to(dev))
        probs = torch.softmax(class_logits(backbone.logit_scale, img.float(), txt, backbone.logit_bias), dim=-1).cpu()
    check_finite_scores(probs, list(images))
    out = []
    for p in probs:
        i = int(p.argmax())
        out.append({"classname": classnames[i], "label": i,
                    "probabilities": {c: float(v) for c, v in zip(classnames, p)}})
    return out


def _read_input(path: str | Path):
    """One input file as the serving Predictor reads it (`read_input_views` with the default input policy):
    2-D files through their reader, a volume (3-D NIfTI, DICOM series folder) through the volume path, its
    middle axial plane. One NIfTI path for training, `predict` and the Predictor."""
    from medclipsvd.data.inputs import read_input_views

    (view,) = read_input_views(str(path))  # the default policy (slices: middle) gives one view
    return view


def load_model(model: str, *, tracking_uri: str | None = None, trust_unverified: bool = False,
               sha256: str | None = None, weights: str | None = None, text_dir: str | None = None,
               device: str = "auto"):
    """A registered model as a Predictor (`.predict_frame(DataFrame)`, `.predict_proba([...])`), what
    `medclipsvd predict --model` loads: models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest,
    models:/<model_id>, runs:/RUN_ID/model or a model folder. Its files must match the digest recorded
    outside them in the registry, or `sha256` (the hex digest `medclipsvd register` prints); a folder with no
    such digest needs `trust_unverified=True` and loads with a warning. See docs/mlflow.md."""
    from medclipsvd.tracking.model_files import load_model as _load_model

    overrides = {k: v for k, v in (("weights", weights), ("text_dir", text_dir)) if v}
    return _load_model(str(model), tracking_uri=tracking_uri, trust_unverified=trust_unverified, sha256=sha256,
                       overrides=overrides, device=device)


def list_pipelines() -> list[str]:
    from medclipsvd.engine.config import list_pipelines as _list

    return _list()


def run_pipeline(pipeline: str, data_root: str | Path, output: str | Path, tracker=None, **kwargs) -> dict:
    """What `medclipsvd train --pipeline ...` does; kwargs as RunSpec fields (backbone=, shots=, seed=,
    method=, mode=, device=, max_steps=, ...). `tracker`: e.g. medclipsvd.tracking.make_tracker(uri, True)
    to log the run to MLflow. Returns the results dict (also in <output>/results.json)."""
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.run import run_experiment

    return run_experiment(spec_from_pipeline(pipeline, data_root=str(data_root), output=str(output), **kwargs),
                          tracker=tracker)
