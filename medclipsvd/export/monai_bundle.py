"""Export a trained adapter as a MONAI bundle (`medclipsvd export --format monai-bundle`).

    OUT/configs/metadata.json     MONAI bundle metadata: versions, network input/output, class names
    OUT/configs/inference.json    MONAI config: network, preprocessing (MONAI Compose), `run` writing
                                  <output_dir>/predictions.json
    OUT/models/model.safetensors  the MERGED vision tower (σ folded into plain weights) + class text features
                                  + logit scale and bias
    OUT/models/backbone.json      the backbone's architecture (JSON), so the bundle builds it without the
                                  folder or hub repository a `local-dir:` / `hf-hub:` backbone came from
    OUT/docs/README.md            how to run it, what it needs (medclipsvd installed), provenance

Run with MONAI's own runner (from OUT, or with --bundle_root OUT):
    python -m monai.bundle run --config_file configs/inference.json --input SERIES_DIR_OR_NIFTI

The bundle carries no patient data: class names, prompt template, backbone name, the training settings and
the weights; never the data root, file names or any DICOM tag value."""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from pathlib import Path

import medclipsvd
from medclipsvd.errors import MedClipSVDError

FORMATS = ("monai-bundle",)


class ExportError(MedClipSVDError):
    """The adapter cannot be exported as asked."""


def _versions() -> dict:
    import monai
    import numpy
    import torch

    versions = {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
                "numpy_version": numpy.__version__}
    required = {"medclipsvd": medclipsvd.__version__, "monai": monai.__version__}
    for name in ("SimpleITK", "pydicom", "open_clip_torch", "timm", "safetensors"):
        try:
            from importlib.metadata import version

            required[name] = version(name)
        except Exception:  # optional for the bundle: listed when installed
            pass
    versions["required_packages_version"] = required
    return versions


def _preprocess_steps(steps: list) -> list[dict]:
    """The training run's deterministic MONAI `preprocess:` steps as bundle config components (`_target_` +
    arguments); random ones are training augmentation and stay out, as in `evaluate` and `predict`."""
    from monai.transforms import Randomizable

    from medclipsvd.data.preprocess import build_preprocess, validate_steps

    steps = validate_steps(steps)  # the allow-list (local_model_config checked it against its file already)
    built = build_preprocess(steps)  # still valid with this MONAI version (one-line error otherwise)
    out = []
    for step, (_, transform) in zip(steps, built.transforms if built else []):
        if isinstance(transform, Randomizable):
            continue
        args = dict(step.get("args") or {})
        args.setdefault("keys", "image")
        out.append({"_target_": f"monai.transforms.{step['name']}", **args})
    return out


def inference_config(backbone: str, classnames: list[str], image_size: int, mean, std, view: dict,
                     preprocess: list) -> dict:
    """configs/inference.json: every component a MONAI config item; override any with --ID value. The fixed
    items come from bundle_check.FIXED, which the bundle runtime holds the file to."""
    from medclipsvd.export.bundle_check import COMPOSE, EVAL_TRANSFORM, FIXED, LOADER

    return {
        "imports": FIXED["imports"],
        "bundle_root": ".",
        "device": FIXED["device"],
        "input": "",
        "output_dir": FIXED["output_dir"],
        "classnames": list(classnames),
        "backbone": backbone,
        "network_def": FIXED["network_def"],
        "network": FIXED["network"],
        "preprocessing": {
            "_target_": COMPOSE,
            "transforms": [
                {"_target_": LOADER, "keys": "image", **view},
                *_preprocess_steps(preprocess),
                {"_target_": EVAL_TRANSFORM, "keys": "image",
                 "image_size": int(image_size), "mean": list(mean), "std": list(std)},
            ],
        },
        "run": FIXED["run"],
    }


def metadata(classnames: list[str], image_size: int, info: dict) -> dict:
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medclipsvd {medclipsvd.__version__} on {created}"},
        **_versions(),
        "name": info["name"],
        "task": "image classification (CLIP-SVD few-shot adapted vision-language model)",
        "description": (f"{info['backbone']} adapted with {info['method']} on {info['dataset']} "
                        f"({info['shots']} shots per class, seed {info['seed']}); classifies a DICOM series "
                        "folder, a NIfTI volume or a 2-D image into the classes below."),
        "authors": "exported with medclipsvd",
        "copyright": "see the training data's licence",
        "intended_use": "research; not a medical device",
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "CT/MR/2-D image", "num_channels": 3,
                "spatial_shape": [int(image_size), int(image_size)], "dtype": "float32",
                "value_range": ["normalised with the backbone's mean/std"], "is_patch_data": False,
                "channel_def": {"0": "R", "1": "G", "2": "B"}}},
            "outputs": {"pred": {
                "type": "probabilities", "format": "classes", "num_channels": len(classnames),
                "spatial_shape": [len(classnames)], "dtype": "float32", "value_range": [0, 1],
                "is_onehot": False, "channel_def": {str(i): c for i, c in enumerate(classnames)}}},
        },
        "medclipsvd": info,
    }


README = """# {name}: MONAI bundle exported by medclipsvd

{description}

Classes (output order): {classes}.

## Run

Requires **medclipsvd {version}** (or later) installed in the Python environment that runs the bundle:
`configs/inference.json` refers to `medclipsvd.export.runtime` (network loader, input reader, evaluation
transform) by `_target_`. medclipsvd brings MONAI, torch, SimpleITK and pydicom.

```bash
cd {folder}
python -m monai.bundle run --config_file configs/inference.json --input /path/to/dicom_series_folder
python -m monai.bundle run --config_file configs/inference.json --input /path/to/volume.nii.gz --output_dir /tmp/preds
# from another folder: point --config_file into the bundle and add --bundle_root PATH/TO/{folder}
```

Several inputs at once: `--input '["/data/a_series", "/data/b.nii.gz"]'`.
Writes `<output_dir>/predictions.json` (default `eval/`): `{{"predictions": [...]}}`, per input `label`, `score`,
`probabilities` per class and `views` (one entry per 2-D view of a volume; the prediction is their mean).
An input that cannot be read is one `error:` line and an `{{"input", "error"}}` entry; the others are still
written, and the run then exits with status 2.
The same numbers as `medclipsvd predict --adapter ADAPTER INPUT` (within 1e-4).

## What is inside

- `models/model.safetensors`: the merged vision tower of `{backbone}` (the trained singular values folded
  into plain weights) plus the class text features, logit scale and logit bias; read with safetensors (no pickle).
- `models/backbone.json`: the backbone's architecture (data, no code), read instead of medclipsvd's registry.
- `configs/inference.json`: input -> views ({view}) -> {preprocess}the backbone's evaluation transform
  (resize {size} bicubic, centre crop, normalise) -> network -> softmax. Override any item on the command line,
  e.g. `--device "$torch.device('cpu')"`.
- `configs/metadata.json`: versions, input/output description, training provenance (`medclipsvd` key).

Security: a MONAI config can run code (`_target_`, `$` expressions). medclipsvd's runtime refuses (exit status 2)
a `configs/inference.json` that holds anything `medclipsvd export` does not write, before MONAI builds any
item; a config edited to no longer import medclipsvd cannot be checked. Only run bundles from people you trust.
Research use only; not a medical device.
"""


def export_monai_bundle(adapter: str | Path, output: str | Path, *, backbone: str | None = None,
                        weights: str | None = None, text_dir: str | None = None, slices: str | None = None,
                        window: str | None = None, axis: str | None = None, dicom_frames: str | None = None,
                        overwrite: bool = False, check: bool = True) -> Path:
    """Write the bundle for the adapter folder of a `medclipsvd train` output; returns the bundle folder."""
    import torch

    from medclipsvd.engine.evaluator import text_features
    from medclipsvd.export.runtime import BUNDLE_FORMAT, SPEC_FILE, WEIGHTS_FILE, head_state
    from medclipsvd.serving.trained_run import load_trained_backbone, local_model_config, read_results

    adapter, output = Path(adapter), Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ExportError(f"--output {output} exists and is not empty; pass --force to replace it, or choose a new "
                          "--output")
    config = local_model_config(adapter, slices=slices, window=window, axis=axis, dicom_frames=dicom_frames)
    base = config["backbone"]
    if backbone and backbone != base["name"]:
        raise ExportError(f"the adapter in {adapter} was made for backbone {base['name']!r}, not {backbone!r}; "
                          f"drop --backbone or pass --backbone {base['name']}")
    run = read_results(adapter.parent / "results.json").get("run") or {}
    overrides = {**{k: v for k, v in (run.get("backbone_kwargs") or {}).items() if k in ("weights", "text_dir")},
                 **{k: v for k, v in (("weights", weights), ("text_dir", text_dir)) if v}}
    bb, method = load_trained_backbone(config, adapter, overrides=overrides)  # AdapterMismatchError for other bases
    bb.eval()
    classnames, template = config["classnames"], config["template"]
    with torch.no_grad():
        text = text_features(bb, classnames, template, torch.device("cpu"))
    state = head_state(bb.model.visual, text, bb.logit_scale, bb.logit_bias)
    info = {"name": f"medclipsvd-{config.get('dataset') or 'custom'}-{base['name']}".lower().replace(" ", "-"),
            "backbone": base["name"], "base_fingerprint": base["fingerprint"], "method": method,
            "dataset": config.get("dataset") or "custom", "shots": config.get("shots"), "seed": config.get("seed"),
            "template": template, "view": config["view"], "preprocess": config.get("preprocess") or [],
            "format": BUNDLE_FORMAT, "library_version": medclipsvd.__version__}
    inference = inference_config(base["name"], classnames, bb.image_size, bb.mean, bb.std, config["view"],
                                 info["preprocess"])
    from medclipsvd.export.bundle_check import BundleConfigError, check_inference_config

    try:  # what the bundle runtime will hold the file to (e.g. a class name starting with `$` would run)
        check_inference_config(inference, "configs/inference.json")
    except BundleConfigError as exc:
        raise ExportError(f"the bundle for {adapter} cannot be written: {exc}") from None
    meta = metadata(classnames, bb.image_size, info)

    from safetensors.torch import save_file

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (tmp / "configs").mkdir()
        (tmp / "models").mkdir()
        (tmp / "docs").mkdir()
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT, "backbone": base["name"]})
        # under the adapter's name for its base: the model may be read from elsewhere now (a moved folder, same
        # weights: checked by fingerprint when the adapter was loaded)
        spec = bb.spec.model_copy(update={"name": base["name"]})
        (tmp / SPEC_FILE).write_text(json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
        (tmp / "configs" / "inference.json").write_text(json.dumps(inference, indent=2) + "\n")
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        pre = ", ".join(s["name"] for s in info["preprocess"])
        (tmp / "docs" / "README.md").write_text(README.format(
            name=info["name"], description=meta["description"], classes=", ".join(classnames),
            version=medclipsvd.__version__, folder=output.name, backbone=base["name"], size=bb.image_size,
            view=", ".join(f"{k} {v}" for k, v in config["view"].items() if v is not None),
            preprocess=f"MONAI {pre} -> " if pre else ""))
        if check:
            _check(tmp, bb, base["name"])
        _plain_permissions(tmp)  # mkdtemp (and safetensors) create owner-only files; a bundle is for sharing
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output


def _plain_permissions(folder: Path) -> None:
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _check(folder: Path, merged, backbone: str) -> None:
    """The written weights reproduce the merged model's image features (catches a wrong export at once)."""
    import torch

    from medclipsvd.export.runtime import SPEC_FILE, WEIGHTS_FILE, load_network

    net = load_network(folder / WEIGHTS_FILE, backbone, spec=folder / SPEC_FILE)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, merged.image_size, merged.image_size, generator=gen)
    with torch.no_grad():
        a = merged.encode_image(x).float()
        b = torch.nn.functional.normalize(net.visual(x).float(), dim=-1)
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        raise ExportError(f"the exported weights do not reproduce the merged model (max difference "
                          f"{(a - b).abs().max():.2e}); please report this")
