"""What an exported MONAI bundle runs. configs/inference.json names these by `_target_`, so the bundle needs
medclipsvd installed where it runs (and MONAI, torch, SimpleITK, which medclipsvd depends on).

- ``load_network``: the merged vision tower (plain weights, no σ-adapter code) + the class-prompt text
  features, logit scale and logit bias, all read from ``models/model.safetensors`` (nothing is unpickled); the
  architecture from medclipsvd's registry, or from ``models/backbone.json`` for backbones named by a folder
  or hub id (so the bundle does not need that folder).
- ``LoadInputd``: an input path (image file, DICOM series folder, NIfTI volume) -> one sample per view, with
  the 3-D -> 2-D settings of the training run; the same reader as `medclipsvd predict`.
- ``ClipEvalTransformd``: the backbone's evaluation transform (resize, centre crop, normalise).
- ``classify``: runs the preprocessing and the network, averages a volume's views, writes predictions.json.

Before MONAI builds any item, the config files are checked against what `export` writes (bundle_check.py:
fixed expressions, plain strings, allow-listed preprocess steps): at import when MONAI's runner imports this
module (the config's first import) and again in ``load_network`` (the first item ``run`` resolves). Under
MONAI's runner a refused config is one ``error:`` line on stderr and exit status 2."""
from __future__ import annotations

import ast
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform
from torch import nn

from medclipsvd.backbones.head import class_logits

BUNDLE_FORMAT = "medclipsvd.monai-bundle"
WEIGHTS_FILE = "models/model.safetensors"
SPEC_FILE = "models/backbone.json"
PREDICTIONS_FILE = "predictions.json"


def _under_monai_runner() -> bool:
    """`python -m monai.bundle ...` is this process."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) in ("monai.bundle.__main__", "monai.bundle")


def _runner_config_files() -> list[Path]:
    """The --config_file(s) MONAI's runner was given (a path, or a list literal of paths)."""
    args, files = sys.argv[1:], []
    for i, arg in enumerate(args):
        for flag in ("--config_file", "--config-file"):
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(flag + "="):
                value = arg[len(flag) + 1:]
            else:
                continue
            try:
                parsed = ast.literal_eval(value) if value.lstrip().startswith(("[", "(")) else value
            except (ValueError, SyntaxError):
                parsed = value
            files += [str(p) for p in parsed] if isinstance(parsed, (list, tuple)) else [str(parsed)]
    return [Path(f) for f in files]


def _check_configs(paths) -> None:
    """Each existing config file is what `export` writes; else one error (under MONAI's runner: one
    `error:` line and exit 2, as MONAI would wrap an exception in pages of traceback)."""
    from medclipsvd.errors import MedClipSVDError
    from medclipsvd.export.bundle_check import check_config_file

    try:
        for path in paths:
            if Path(path).is_file():
                check_config_file(path)
    except MedClipSVDError as exc:
        if not _under_monai_runner():
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if _under_monai_runner():  # imported by the config's `imports`: before any other item is resolved
    _check_configs(_runner_config_files())


class BundleClassifier(nn.Module):
    """logits = logit_scale · normalise(visual(x)) @ text_featuresᵀ + logit_bias — the adapted CLIP classifier
    (bias 0; SigLIP's own bias), text side precomputed (so no tokenizer is needed at inference)."""

    def __init__(self, visual: nn.Module, text_features: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor | None = None):
        super().__init__()
        self.visual = visual
        self.register_buffer("text_features", text_features.float())
        self.register_buffer("logit_scale", logit_scale.float().reshape(()))
        bias = torch.zeros(()) if logit_bias is None else logit_bias.float().reshape(())
        self.register_buffer("logit_bias", bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = nn.functional.normalize(self.visual(images).float(), dim=-1)
        return class_logits(self.logit_scale, feats, self.text_features, self.logit_bias)


def head_state(visual: nn.Module, text_features: torch.Tensor, logit_scale: torch.Tensor,
               logit_bias: torch.Tensor | None = None) -> dict:
    """The tensors `load_network` reads (what the export writes)."""
    state = {f"visual.{k}": v.detach().to("cpu", torch.float32).contiguous().clone()
             for k, v in visual.state_dict().items()}
    state["text_features"] = text_features.detach().to("cpu", torch.float32).contiguous()
    state["logit_scale"] = logit_scale.detach().to("cpu", torch.float32).reshape(()).contiguous()
    if logit_bias is not None:
        state["logit_bias"] = logit_bias.detach().to("cpu", torch.float32).reshape(()).contiguous()
    return state


def load_network(weights: str | os.PathLike, backbone: str, device: str | torch.device = "cpu",
                 spec: str | os.PathLike | None = None) -> BundleClassifier:
    """The bundle's network: `backbone`'s vision architecture (built from medclipsvd's registry, or from the
    `spec` file the export wrote for a backbone named by folder or hub id; random init, nothing downloaded)
    with the merged weights from `weights`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from medclipsvd.backbones.backbone import _build_model
    from medclipsvd.backbones.registry import get_spec
    from medclipsvd.errors import MedClipSVDError

    weights = Path(weights)
    _check_configs([weights.parent.parent / "configs" / "inference.json"])  # the bundle's own config
    if not weights.is_file():
        raise MedClipSVDError(f"{weights} is missing: run the bundle from its folder or pass --bundle_root "
                              "<bundle folder>")
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != BUNDLE_FORMAT or meta.get("backbone") != backbone:
        raise MedClipSVDError(f"{weights} holds {meta.get('format')!r} weights for {meta.get('backbone')!r}, "
                              f"not {BUNDLE_FORMAT} weights for {backbone!r}; re-export the bundle")
    state = load_file(str(weights))
    arch = _bundled_spec(spec, backbone) if spec is not None and Path(spec).is_file() else get_spec(backbone)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: do not disturb the caller's RNG
        visual = _build_model(arch).visual
    visual.load_state_dict({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")},
                           strict=True)
    net = BundleClassifier(visual, state["text_features"], state["logit_scale"], state.get("logit_bias"))
    return net.to(device).eval()


def _bundled_spec(path: str | os.PathLike, backbone: str):
    """The architecture the export recorded (plain JSON, validated as a BackboneSpec: no code, no download)."""
    from pydantic import ValidationError

    from medclipsvd.backbones.registry import BackboneSpec
    from medclipsvd.errors import MedClipSVDError

    try:
        spec = BackboneSpec(**json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, ValidationError) as exc:
        raise MedClipSVDError(f"{path} is not a valid backbone description ({str(exc).splitlines()[0][:200]}); "
                              "re-export the bundle") from None
    if spec.name != backbone:
        raise MedClipSVDError(f"{path} describes {spec.name!r}, not {backbone!r}; re-export the bundle")
    return spec


class LoadInputd(MapTransform):
    """{"image": path} -> one dict per view {"image": float32 tensor [3, H, W] in [0, 1], "view": k}."""

    def __init__(self, keys="image", slices: str = "middle", window: str | None = None, axis: str = "axial",
                 dicom_frames: str = "middle", modality: str | None = None):
        super().__init__(keys)
        from medclipsvd.data.volumes.policy import InputPolicy

        self.view = InputPolicy(slices=slices, window=window, axis=axis, dicom_frames=dicom_frames, modality=modality)

    def __call__(self, data):
        from medclipsvd.data.inputs import read_input_views

        key = self.first_key(dict(data))
        views = read_input_views(str(data[key]), self.view)
        return [{**dict(data), key: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))), "view": k}
                for k, v in enumerate(views)]


class ClipEvalTransformd(MapTransform):
    """The backbone's evaluation transform (medclipsvd.data.transforms.EvalTransform) on channel-first
    images with 1 or 3 channels in [0, 1] -> normalised [3, S, S]."""

    def __init__(self, keys="image", image_size: int = 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__(keys)
        from medclipsvd.data.transforms import EvalTransform

        self.transform = EvalTransform(image_size, mean, std)

    def __call__(self, data):
        from monai.utils import convert_to_numpy

        d = dict(data)
        for key in self.key_iterator(d):
            img = convert_to_numpy(d[key], dtype=np.float32)
            if img.shape[0] == 1:
                img = np.repeat(img, 3, axis=0)
            d[key] = self.transform(np.ascontiguousarray(img.transpose(1, 2, 0)))
        return d


@torch.no_grad()
def classify(network: nn.Module, preprocessing, input, output_dir: str, classnames: list[str],
             device: str | torch.device = "cpu", batch_size: int = 32) -> dict:
    """Classify `input` (an image, series folder or NIfTI path, or a list of them); write
    <output_dir>/predictions.json ({"predictions": [...]}, one entry per input) and return it.
    A volume with several views gets the mean of their probabilities (the study-level rule).

    An input that cannot be read (not found, not a volume, a broken series ...) is one ``error:`` line on
    stderr and an ``{"input", "error"}`` entry; the other inputs are still classified and written. Then,
    under MONAI's runner, exit status 2 (instead of MONAI's traceback); called from Python, a
    MedClipSVDError naming the failed inputs, after the file is written."""
    from medclipsvd.errors import MedClipSVDError

    inputs = [str(p) for p in input] if isinstance(input, (list, tuple)) else [str(input)] if input else []
    if not inputs:
        raise MedClipSVDError("no input: pass --input PATH (a DICOM series folder, a NIfTI file or an image)")
    device = torch.device(device)
    results, failed = [], []
    with _exact_float32():
        for path in inputs:
            try:
                if not os.path.exists(path.split("#series=")[0]):
                    raise MedClipSVDError(f"{path}: input not found; check the path (a DICOM series folder, a "
                                          f"NIfTI file or an image)")
                results.append(_classify_one(network, preprocessing, path, classnames, device, batch_size))
            except (MedClipSVDError, OSError) as exc:
                message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the reader said
                print(f"error: {message}", file=sys.stderr, flush=True)
                results.append({"input": path, "error": message})
                failed.append(path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"classnames": list(classnames), "predictions": results}
    (out / PREDICTIONS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written: {out / PREDICTIONS_FILE} ({len(inputs) - len(failed)} of {len(inputs)} input(s) classified)")
    if failed:
        if _under_monai_runner():
            raise SystemExit(2)
        raise MedClipSVDError(f"{len(failed)} of {len(inputs)} input(s) could not be classified (each named above "
                              f"and in {out / PREDICTIONS_FILE}); the others' predictions are written")
    return payload


@contextlib.contextmanager
def _exact_float32():
    """No TF32 (cuDNN convolutions use it by default on CUDA): it would move probabilities by ~1e-3, and the
    bundle promises `medclipsvd predict`'s numbers (float32, CPU) within 1e-4."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _classify_one(network, preprocessing, path: str, classnames: list[str], device, batch_size: int) -> dict:
    items = preprocessing({"image": path})
    items = items if isinstance(items, list) else [items]
    probs = []
    for start in range(0, len(items), batch_size):
        x = torch.stack([torch.as_tensor(it["image"]) for it in items[start:start + batch_size]]).to(device)
        probs.append(torch.softmax(network(x.float()), dim=-1).cpu())
    p = torch.cat(probs).numpy().astype(np.float64)
    mean = p.mean(axis=0)
    best = int(mean.argmax())
    print(f"{path}: {classnames[best]} ({mean[best]:.4f}) from {len(p)} view(s)")
    return {"input": path, "label": classnames[best], "label_index": best, "score": float(mean[best]),
            "probabilities": {c: float(v) for c, v in zip(classnames, mean)},
            "views": [{c: float(v) for c, v in zip(classnames, row)} for row in p]}
