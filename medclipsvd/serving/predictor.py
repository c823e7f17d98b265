"""Classification with a trained model: base backbone + adapter, merged once; class prompts encoded once.

Used by `medclipsvd predict`, the MLflow pyfunc model (tracking/pyfunc_model.py) and usable directly; no MLflow
is imported here (a registered model is loaded by `medclipsvd.tracking.model_files.load_model`). Only JSON and safetensors are read
from the model folder. Inputs are a DataFrame with one column of images: arrays (HxW or HxWxC; integer arrays
are scaled by 255 when their values fit 8 bits, else by their own min/max; float arrays already in [0, 1] are
used as they are, other floats are min/max scaled), encoded files (bytes, base64 or data: URIs of PNG, JPEG,
DICOM) or file paths (DICOM, NIfTI, PNG/JPEG/...), the latter as the predictor's `PathPolicy` allows: any path
for local use (`from_adapter`, `tracking.model_files.load_model`), none or those under a serving root for
a served model (`from_files`' default, see serving/inputs.py).
A DICOM series folder or NIfTI volume is classified through its views (the training run's 3-D -> 2-D
settings, `medclipsvd.data.inputs`); its probabilities are the mean over its views."""
from __future__ import annotations

import os

import numpy as np

from medclipsvd.errors import DataError
from medclipsvd.serving.inputs import PathPolicy
from medclipsvd.serving.trained_run import load_model_config, load_trained_backbone, local_model_config

IMAGE_COLUMNS = ("image", "path", "file", "images")
INDEX_COLUMN = "index"


class Predictor:
    """A merged, adapted backbone with its class prompts, ready to classify images."""

    def __init__(self, backbone, classnames: list[str], template: str, device: str = "cpu", view=None,
                 preprocess=None, paths: PathPolicy | None = None, precision: str = "auto"):
        from medclipsvd.data import build_transform
        from medclipsvd.data.volumes.policy import InputPolicy
        from medclipsvd.engine.evaluator import text_features

        self.backbone = backbone
        self.classnames = list(classnames)
        self.template = template
        self.paths = paths or PathPolicy()  # which file paths inputs may name (none unless told)
        from medclipsvd.device import precision_plan, resolve_device

        self.device = resolve_device(str(device))  # auto, cpu, cuda[:N]; a clear error for anything else
        self.precision = precision_plan(precision, self.device)  # refuses what this machine cannot run
        self.view = view if isinstance(view, InputPolicy) else InputPolicy(**(view or {}))
        self.backbone.to(self.device).eval()
        self.transform = build_transform(backbone.image_size, backbone.mean, backbone.std, train=False)
        if preprocess:  # the MONAI transforms the model was trained with (pipeline `preprocess:`)
            from medclipsvd.data.preprocess import with_preprocess

            self.transform = with_preprocess(self.transform, preprocess)
        self.text = text_features(backbone, self.classnames, template, self.device, self.precision.eval_text)

    @classmethod
    def from_files(cls, config_path: str | os.PathLike, adapter_dir: str | os.PathLike,
                   bundle: str | None = None, tokenizer_dir: str | None = None, overrides: dict | None = None,
                   device: str = "cpu", paths: PathPolicy | None = None, precision: str = "auto") -> "Predictor":
        """From a model configuration and an adapter folder, checked by the caller (no digest is verified
        here). Inputs may name no file path unless `paths` says so: this is what the pyfunc builds, also the
        pyfunc_model.py of folders registered by earlier versions, whose clients are not the server's owner."""
        config = load_model_config(config_path)
        # refuses an adapter made for other base weights
        backbone, _ = load_trained_backbone(config, adapter_dir, bundle, tokenizer_dir, overrides)
        return cls(backbone, config["classnames"], config["template"], device, view=config.get("view"),
                   preprocess=config.get("preprocess"), paths=paths, precision=precision)

    @classmethod
    def from_adapter(cls, adapter_dir: str | os.PathLike, overrides: dict | None = None, device: str = "cpu",
                     precision: str = "auto", **view_overrides) -> "Predictor":
        """From a `medclipsvd train` output (adapter/ and the results.json beside it), without MLflow.
        view_overrides: slices=, window=, axis= replacing the training run's 3-D -> 2-D settings."""
        config = local_model_config(adapter_dir, **view_overrides)
        backbone, _ = load_trained_backbone(config, adapter_dir, overrides=overrides)
        return cls(backbone, config["classnames"], config["template"], device, view=config["view"],
                   preprocess=config.get("preprocess"), paths=PathPolicy.local(), precision=precision)

    # inputs -------------------------------------------------------------------------------------
    def _images(self, item, index, row: int = 0) -> list[np.ndarray]:
        """The model's views of one input (row `row`): one image, or a volume's views."""
        from medclipsvd.serving.inputs import read_item

        index = _index(index, row)
        views = read_item(item, index, row, self.paths, self.view)
        if views is not None:
            return views
        arr = np.asarray(item)
        if arr.dtype == object or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise DataError(f"input row {row}: an input array has shape {arr.shape} ({arr.dtype}); expected HxW "
                            "or HxWxC with C in 1, 3, 4, or an encoded image" + (", or a file path"
                                                                                  if self.paths.anywhere else ""))
        return [_to_unit_rgb(arr, row)]

    def _image(self, item, index) -> np.ndarray:
        return self._images(item, index)[0]

    def predict_proba(self, images: list, indices: list | None = None, batch_size: int = 32) -> np.ndarray:
        """Probabilities [N, C] for file paths (images, series folders, NIfTI volumes) and/or arrays; a
        volume with several views gets the mean of their probabilities."""
        import torch

        from medclipsvd.backbones.head import class_logits
        from medclipsvd.engine.evaluator import check_finite_scores
        from medclipsvd.engine.trainer import autocast_for

        indices = indices if indices is not None else [None] * len(images)
        views, owner = [], []  # every view to classify, and the input it belongs to
        for n, (x, i) in enumerate(zip(images, indices)):
            for img in self._images(x, i, n):
                views.append(img)
                owner.append(n)
        out = []
        for start in range(0, len(views), batch_size):
            x = torch.stack([self.transform(v) for v in views[start:start + batch_size]]).to(self.device)
            with torch.no_grad(), autocast_for(self.device, self.precision.eval_image):
                img = self.backbone.encode_image(x).float()
            logits = class_logits(self.backbone.logit_scale, img.cpu(), self.text.cpu(), self.backbone.logit_bias)
            out.append(torch.softmax(logits, dim=-1).numpy())
        probs = np.concatenate(out) if out else np.zeros((0, len(self.classnames)), dtype=np.float32)
        check_finite_scores(probs, images, owner)  # no label is printed from NaN probabilities
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
                raise DataError("the input DataFrame has no columns; give a column `image` of images (arrays, "
                                "base64-encoded files or, where allowed, file paths)")
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


def _index(value, row: int) -> int | None:
    """The `index` column's value (frame / slice) as an int, None when absent."""
    if value is None or _is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or number < 0:
        raise DataError(f"input row {row}: `index` must be a whole number >= 0 (a DICOM frame or NIfTI slice)")
    return int(number)


def _is_missing(value) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return value is None


def _to_unit_rgb(arr: np.ndarray, row: int = 0) -> np.ndarray:
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
        raise DataError(f"input row {row}: an input array holds NaN or infinite values")
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


def apply_threshold(frame, threshold: float):
    """Relabel a binary prediction frame (label, label_index, score, prob_<class>) at an operating point:
    the second class when its probability is >= threshold, else the first, as the operating points in
    results.json are defined (engine/operating_points.py). ``score`` becomes the probability of the label
    given. Refused for other than two classes: a threshold on one class says nothing about the others."""
    import numpy as np

    from medclipsvd.errors import MedClipSVDError

    if not 0.0 <= threshold <= 1.0 or threshold != threshold:
        raise MedClipSVDError(f"--threshold must be a probability between 0 and 1, got {threshold}; take one from "
                              "the operating points of the run's results.json")
    prob_cols = [c for c in frame.columns if c.startswith("prob_")]
    if len(prob_cols) != 2:
        raise MedClipSVDError(f"--threshold applies to two-class models; this one has {len(prob_cols)} classes "
                              f"({', '.join(c.removeprefix('prob_') for c in prob_cols)}); leave it out to take the "
                              "most probable class")
    names = [c.removeprefix("prob_") for c in prob_cols]
    positive = frame[prob_cols[1]].to_numpy() >= threshold
    frame = frame.copy()
    frame["label_index"] = positive.astype(int)
    frame["label"] = [names[int(p)] for p in positive]
    frame["score"] = np.where(positive, frame[prob_cols[1]], frame[prob_cols[0]])
    return frame
