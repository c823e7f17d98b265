"""The steps a training run (`engine/run.py`) and an adapter evaluation (`engine/adapter_evaluation.py`)
share: where splits come from, the run's transforms, the base backbone, the precision each phase computes
in, the evaluation set and the prediction in that precision."""
from __future__ import annotations

import json
import random
from typing import Callable

import numpy as np
import torch

from medclipsvd.engine.evaluator import predict_probs
from medclipsvd.engine.modes import mode_settings
from medclipsvd.engine.spec import RunSpec

# (name, root) -> DatasetSplits; the default reads from disk through medclipsvd.data.
SplitsProvider = Callable[[str, str], object]


def load_kwargs(policy: dict) -> dict:
    """The split file and input policy of ``RunSpec.input_policy()`` as `load_dataset` keywords."""
    out = {k: policy[k] for k in ("split_file", "slices", "window", "axis", "dicom_frames")}
    return {**out, "modality": policy["modality"]} if policy.get("modality") else out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_provider(allow_missing: bool = False, follow_symlinks: bool = False,
                     volume: dict | None = None) -> SplitsProvider:
    """Reads from disk; ``volume``: split_file / slices / window / axis / dicom_frames for load_dataset."""
    def provide(name: str, root: str):
        from medclipsvd.data import load_dataset

        return load_dataset(name, root, allow_missing=allow_missing, follow_symlinks=follow_symlinks,
                            **(volume or {}))

    return provide


def data_package():
    """medclipsvd.data, imported when a step first needs it."""
    import medclipsvd.data as data

    return data


def hflip_for(spec: RunSpec, dataset: str) -> bool:
    """Whether training flips images: the spec's choice, else parity's flip-all, else the dataset's default."""
    if spec.hflip is not None:
        return spec.hflip
    if mode_settings(spec.mode).hflip_all:  # parity: the reference flips every dataset
        return True
    try:
        return bool(data_package().dataset_info(dataset).hflip)
    except Exception:  # custom/unregistered datasets: flips are the reference default
        return True


def transforms_for(spec: RunSpec, backbone, dataset: str):
    """(train, eval) transforms for `backbone`'s input size and normalisation, after the pipeline's MONAI steps."""
    data = data_package()
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    hflip = hflip_for(spec, dataset)
    scale = tuple(spec.crop_scale)
    if scale == (0.08, 1.0):  # the reference's crop
        train_tf = data.build_transform(size, mean, std, train=True, hflip=hflip)
    else:  # build_transform has no scale argument; its TrainTransform does
        from medclipsvd.data.transforms import TrainTransform

        train_tf = TrainTransform(size, mean, std, hflip=hflip, scale=scale)
    eval_tf = data.build_transform(size, mean, std, train=False)
    if spec.preprocess:  # user MONAI transforms first; without them the reference transforms, untouched
        from medclipsvd.data.preprocess import build_preprocess, with_preprocess

        pre = build_preprocess(spec.preprocess, source=spec.preprocess_source)
        train_tf, eval_tf = with_preprocess(train_tf, pre, train=True), with_preprocess(eval_tf, pre)
    return train_tf, eval_tf


_BASE_CACHE: dict = {}


def load_backbone_for(spec: RunSpec):
    """A fresh copy of the base backbone. The last base loaded is kept in memory and deep-copied, so a
    benchmark builds (or downloads and verifies) each backbone once rather than once per run."""
    import copy

    from medclipsvd.backbones import load_backbone

    key = (spec.backbone, json.dumps(spec.backbone_kwargs, sort_keys=True))
    if key not in _BASE_CACHE:
        _BASE_CACHE.clear()  # one base at a time: full-size models are large
        base = load_backbone(spec.backbone, **spec.backbone_kwargs)
        base.fingerprint()
        _BASE_CACHE[key] = base
    return copy.deepcopy(_BASE_CACHE[key])


def eval_set(spec: RunSpec, samples, eval_tf):
    """Evaluation images through the preprocessed cache (decoded once per sweep; see data/eval_cache.py)."""
    from medclipsvd.data.eval_cache import eval_dataset

    return eval_dataset(samples, eval_tf, spec.cache_dir)


def run_precision(spec: RunSpec):
    """The precision each phase of this run computes in (medclipsvd.device.PrecisionPlan); refuses, before
    any work, a --precision this machine cannot run."""
    from medclipsvd.device import precision_plan, resolve_device

    return precision_plan(spec.precision, resolve_device(spec.device), mode_settings(spec.mode))


def predict(spec: RunSpec, plan, backbone, ds, classnames, template: str, progress: bool = False):
    """Softmax probabilities and labels, in the evaluation precision of `plan` (`run_precision`)."""
    return predict_probs(backbone, ds, list(classnames), template, spec.device, spec.eval_batch_size,
                         spec.num_workers, progress=progress, text_amp=plan.eval_text,
                         image_amp=plan.eval_image)
