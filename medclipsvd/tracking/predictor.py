"""Classification with a registered model: base backbone + adapter, merged once; class prompts encoded once.

Used by the MLflow pyfunc model (`pyfunc_model.py`) and usable directly. Only JSON and safetensors are read
from the model folder. Inputs are a DataFrame with one column of images: file paths (DICOM, NIfTI,
PNG/JPEG/...) or arrays (HxW or HxWxC; integer arrays are scaled by 255 when their values fit 8 bits, else by
their own min/max; float arrays already in [0, 1] are used as they are, other floats are min/max scaled).
A DICOM series folder or NIfTI volume is classified through its views (the training run's 3-D -> 2-D
settings, `medclipsvd.data.inputs`); its probabilities are the mean over its views."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medclipsvd.errors import AdapterError, DataError, MedClipSVDError

MODEL_CONFIG = "model_config.json"
MODEL_FORMAT = "medclipsvd.registered-model"
IMAGE_COLUMNS = ("image", "path", "file", "images")
INDEX_COLUMN = "index"


def load_model_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MedClipSVDError(f"{path}: cannot read the model configuration ({exc})") from None
    if config.get("format") != MODEL_FORMAT:
        raise MedClipSVDError(f"{path} is not a medclipsvd model configuration (format {config.get('format')!r})")
    return config


def build_backbone(config: dict, bundle: str | None = None, tokenizer_dir: str | None = None,
                   overrides: dict | None = None):
    """The base backbone the adapter was made from. Order: bundled weights; `overrides` (weights=,
    text_dir=, e.g. from the pyfunc's model_config or the MEDCLIPSVD_BACKBONE_WEIGHTS / MEDCLIPSVD_TEXT_DIR
    environment variables); seeded random weights for `random-init:` sources; the recorded weight source."""
    from medclipsvd.backbones import load_backbone

    base = config["backbone"]
    overrides = dict(overrides or {})
    weights = overrides.get("weights") or os.environ.get("MEDCLIPSVD_BACKBONE_WEIGHTS")
    text_dir = overrides.get("text_dir") or os.environ.get("MEDCLIPSVD_TEXT_DIR") or tokenizer_dir
    kw = {"text_dir": text_dir} if text_dir else {}
    source = str(base.get("source") or "")
    if bundle:
        return load_backbone(base["name"], weights=bundle, **kw)
    if weights:
        return load_backbone(base["name"], weights=weights, **kw)
    if source.startswith("random-init:"):
        seed = int(source.partition("seed=")[2] or 0)
        return load_backbone(base["name"], random_init=True, seed=seed, **kw)
    return load_backbone(base["name"], weights=source or None, **kw)


class Predictor:
    """A merged, adapted backbone with its class prompts, ready to classify images."""

    def __init__(self, backbone, classnames: list[str], template: str, device: str = "cpu", view=None,
                 preprocess=None):
        from medclipsvd.data import build_transform
        from medclipsvd.data.inputs import ViewSettings
        from medclipsvd.engine.evaluator import text_features

        self.backbone = backbone
        self.classnames = list(classnames)
        self.template = template
        from medclipsvd.engine.trainer import resolve_device

        self.device = resolve_device(str(device))  # auto, cpu, cuda[:N]; a clear error for anything else
        self.view = view if isinstance(view, ViewSettings) else ViewSettings(**(view or {}))
        self.backbone.to(self.device).eval()
        self.transform = build_transform(backbone.image_size, backbone.mean, backbone.std, train=False)
        if preprocess:  # the MONAI transforms the model was trained with (pipeline `preprocess:`)
            from medclipsvd.data.preprocess import with_preprocess

            self.transform = with_preprocess(self.transform, preprocess)
        self.text = text_features(backbone, self.classnames, template, self.device)

    @classmethod
    def from_files(cls, config_path: str | os.PathLike, adapter_dir: str | os.PathLike,
                   bundle: str | None = None, tokenizer_dir: str | None = None, overrides: dict | None = None,
                   device: str = "cpu") -> "Predictor":
        from medclipsvd.engine.methods import load_trained

        config = load_model_config(config_path)
        backbone = build_backbone(config, bundle, tokenizer_dir, overrides)
        method = load_trained(backbone, adapter_dir)  # refuses an adapter made for other base weights
        if method == "svd":
            from medclipsvd.svd import merge

            merge(backbone)
        return cls(backbone, config["classnames"], config["template"], device, view=config.get("view"),
                   preprocess=config.get("preprocess"))

    @classmethod
    def from_adapter(cls, adapter_dir: str | os.PathLike, overrides: dict | None = None, device: str = "cpu",
                     **view_overrides) -> "Predictor":
        """From a `medclipsvd train` output (adapter/ and the results.json beside it), without MLflow.
        view_overrides: slices=, window=, axis= replacing the training run's 3-D -> 2-D settings."""
        config = local_model_config(adapter_dir, **view_overrides)
        from medclipsvd.engine.methods import load_trained

        backbone = build_backbone(config, overrides=overrides)
        if load_trained(backbone, adapter_dir) == "svd":
            from medclipsvd.svd import merge

            merge(backbone)
        return cls(backbone, config["classnames"], config["template"], device, view=config["view"],
                   preprocess=config.get("preprocess"))

    # inputs -------------------------------------------------------------------------------------
    def _images(self, item, index) -> list[np.ndarray]:
        """The model's views of one input: one image, or a volume's views."""
        from medclipsvd.data.inputs import read_input_views

        if isinstance(item, (str, os.PathLike)):
            return read_input_views(item, self.view, None if index is None or _is_missing(index) else int(index))
        arr = np.asarray(item)
        if arr.dtype == object or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise DataError(f"an input array has shape {arr.shape} ({arr.dtype}); expected HxW or HxWxC with "
                            "C in 1, 3, 4, or a file path")
        return [_to_unit_rgb(arr)]

    def _image(self, item, index) -> np.ndarray:
        return self._images(item, index)[0]

    def predict_proba(self, images: list, indices: list | None = None, batch_size: int = 32) -> np.ndarray:
        """Probabilities [N, C] for file paths (images, series folders, NIfTI volumes) and/or arrays; a
        volume with several views gets the mean of their probabilities."""
        import torch

        from medclipsvd.engine.trainer import autocast_for

        indices = indices if indices is not None else [None] * len(images)
        views, owner = [], []  # every view to classify, and the input it belongs to
        for n, (x, i) in enumerate(zip(images, indices)):
            for img in self._images(x, i):
                views.append(img)
                owner.append(n)
        out = []
        for start in range(0, len(views), batch_size):
            x = torch.stack([self.transform(v) for v in views[start:start + batch_size]]).to(self.device)
            with torch.no_grad(), autocast_for(self.device):
                img = self.backbone.encode_image(x).float()
            logits = self.backbone.logits(img.cpu(), self.text.cpu())
            out.append(torch.softmax(logits, dim=-1).numpy())
        probs = np.concatenate(out) if out else np.zeros((0, len(self.classnames)), dtype=np.float32)
        owner = np.asarray(owner, dtype=int)
        return np.stack([probs[owner == n].mean(axis=0) for n in range(len(images))]) if len(images) else probs

    def predict_frame(self, frame):
        """DataFrame in (a column of images, optional `index`), DataFrame out (see `output_frame`)."""
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame({"image": list(frame) if not isinstance(frame, (str, bytes)) else [frame]})
        column = next((c for c in IMAGE_COLUMNS if c in frame.columns), None)
        if column is None:
            if len(frame.columns) == 0:
                raise DataError("the input DataFrame has no columns; give a column `image` of file paths or arrays")
            column = frame.columns[0]
        indices = list(frame[INDEX_COLUMN]) if INDEX_COLUMN in frame.columns else None
        probs = self.predict_proba(list(frame[column]), indices)
        return self.output_frame(probs)

    def output_frame(self, probs: np.ndarray):
        import pandas as pd

        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
        data = {"label": [self.classnames[i] for i in best], "label_index": best.astype(int),
                "score": probs.max(axis=1) if len(probs) else np.zeros(0)}
        for i, name in enumerate(self.classnames):
            data[f"prob_{name}"] = probs[:, i]
        return pd.DataFrame(data)


def local_model_config(adapter_dir: str | os.PathLike, **view_overrides) -> dict:
    """A model configuration (what `register` stores) from a local train output: the adapter folder and
    the results.json `medclipsvd train` wrote next to it (class names, prompt template, 3-D -> 2-D settings,
    MONAI preprocess). view_overrides (slices=, window=, axis=) replace the recorded settings."""
    from medclipsvd.data.inputs import ViewSettings
    from medclipsvd.tracking.registry import build_model_config

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterError(f"adapter folder {adapter_dir} does not exist; pass the adapter/ folder that "
                           "`medclipsvd train` wrote under its --output")
    results_file = adapter_dir.parent / "results.json"
    try:
        results = json.loads(results_file.read_text())
    except (OSError, json.JSONDecodeError):
        raise AdapterError(f"{results_file} is missing or unreadable: it names the classes and the prompt the "
                           "adapter was trained with; pass the adapter/ folder of a `medclipsvd train` output "
                           "(results.json beside it)") from None
    config = build_model_config(adapter_dir, results, "local")
    config["view"] = ViewSettings.from_run(results.get("run"), **view_overrides).to_dict()
    return config


def _is_missing(value) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return value is None


def _to_unit_rgb(arr: np.ndarray) -> np.ndarray:
    a = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
        top = float(a.max()) if a.size else 0.0
        if top <= 255 and float(a.min(initial=0)) >= 0:
            a = a / 255.0
        else:
            a = _minmax(a)
    elif a.size and (float(a.min()) < 0.0 or float(a.max()) > 1.0):
        a = _minmax(a)
    if not np.isfinite(a).all():
        raise DataError("an input array holds NaN or infinite values")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]  # drop alpha
    return np.ascontiguousarray(a)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
