"""What the configs/inference.json of a medclipsvd MONAI bundle may hold, checked before MONAI builds anything.

MONAI's runner evaluates every string that starts with ``$`` as Python and instantiates every ``_target_``,
so a config is code. The bundle's config is only ever the one `medclipsvd export` writes: the fixed items
and expressions below, plain strings (class names, backbone, view settings), and the training run's
preprocess steps, which must pass the same allow-list as every other preprocess list
(medclipsvd/data/preprocess_steps.py). The bundle runtime (runtime.py) checks the config files it is run
with against this before any of their items is built: as soon as MONAI imports the runtime (the config's
first import), and again when the network is loaded (the first item ``run`` resolves).

What no check inside the bundle can cover: a config edited so that it never imports or calls
medclipsvd (its ``imports`` or ``network_def`` replaced) runs whatever it says, as any MONAI bundle would;
run bundles only from people you trust."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medclipsvd.errors import MedClipSVDError

RUNTIME = "medclipsvd.export.runtime"
COMPOSE = "monai.transforms.Compose"
LOADER = f"{RUNTIME}.LoadInputd"
EVAL_TRANSFORM = f"{RUNTIME}.ClipEvalTransformd"
WEIGHTS_EXPR = "$@bundle_root + '/models/model.safetensors'"
SPEC_EXPR = "$@bundle_root + '/models/backbone.json'"

# The items `export` writes whose value never changes (expressions and references included).
FIXED: dict[str, Any] = {
    "imports": ["$import torch", f"$import {RUNTIME} as medclipsvd_runtime"],
    "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    "output_dir": "$@bundle_root + '/eval'",
    "network_def": {"_target_": f"{RUNTIME}.load_network", "weights": WEIGHTS_EXPR, "backbone": "@backbone",
                    "spec": SPEC_EXPR},
    "network": "$@network_def.to(@device).eval()",
    "run": ["$medclipsvd_runtime.classify(@network, @preprocessing, @input, @output_dir, @classnames, @device)"],
}
# Bundles exported before models/backbone.json existed name no spec; they still run (registry backbones only).
EARLIER = {"network_def": [{"_target_": f"{RUNTIME}.load_network", "weights": WEIGHTS_EXPR, "backbone": "@backbone"}]}
PLAIN = ("bundle_root", "input", "backbone")      # plain strings
VIEW_KEYS = ("slices", "window", "axis", "dicom_frames", "modality")


class BundleConfigError(MedClipSVDError):
    """A bundle config holds something `medclipsvd export` never writes (it was edited)."""


def _plain(value: Any) -> bool:
    """A string MONAI takes literally: not an expression ($), a reference (@) or a macro (%)."""
    return isinstance(value, str) and not value.startswith(("$", "@", "%"))


def _number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_inference_config(config: Any, source: str) -> None:
    """Raise one-line ``BundleConfigError`` (or the allow-list's ``PreprocessConfigError``) naming ``source``
    and the item unless ``config`` (or a part of one, as MONAI merges several files) is what export writes."""
    edited = "differs from what `medclipsvd export` writes; re-export the bundle from the adapter"
    if not isinstance(config, dict):
        raise BundleConfigError(f"{source}: a bundle config is a JSON object, got {type(config).__name__}")
    for key, value in config.items():
        if key in FIXED:
            if value != FIXED[key] and value not in EARLIER.get(key, []):
                raise BundleConfigError(f"{source}: item {key!r} {edited}")
        elif key in PLAIN:
            if not _plain(value):
                raise BundleConfigError(f"{source}: item {key!r} must be a plain string (no $ expression, "
                                        f"@ reference or % macro); it {edited}")
        elif key == "classnames":
            if not (isinstance(value, list) and value and all(_plain(c) for c in value)):
                raise BundleConfigError(f"{source}: item 'classnames' must be a list of plain strings (no $, @ or "
                                        f"% prefix); it {edited}")
        elif key == "preprocessing":
            _check_preprocessing(value, source, edited)
        else:
            raise BundleConfigError(f"{source}: item {str(key)[:80]!r} {edited} (items: "
                                    f"{', '.join([*FIXED, *PLAIN, 'classnames', 'preprocessing'])})")


def _check_preprocessing(value: Any, source: str, edited: str) -> None:
    from medclipsvd.data.preprocess_steps import check_step

    where = f"{source}: item 'preprocessing'"
    if not (isinstance(value, dict) and set(value) == {"_target_", "transforms"} and value["_target_"] == COMPOSE
            and isinstance(value["transforms"], list) and len(value["transforms"]) >= 2):
        raise BundleConfigError(f"{where} must be a {COMPOSE} of transforms and nothing else; it {edited}")
    first, *steps, last = value["transforms"]
    if not (isinstance(first, dict) and first.get("_target_") == LOADER and first.get("keys") == "image"
            and set(first) <= {"_target_", "keys", *VIEW_KEYS}
            and all(first[k] is None or _plain(first[k]) for k in VIEW_KEYS if k in first)):
        raise BundleConfigError(f"{where}: the first transform must be {LOADER} with plain view settings "
                                f"({', '.join(VIEW_KEYS)}); it {edited}")
    if not (isinstance(last, dict) and last.get("_target_") == EVAL_TRANSFORM and last.get("keys") == "image"
            and set(last) == {"_target_", "keys", "image_size", "mean", "std"}
            and isinstance(last["image_size"], int) and not isinstance(last["image_size"], bool)
            and 1 <= last["image_size"] <= 4096
            and all(isinstance(last[k], list) and len(last[k]) == 3 and all(map(_number, last[k]))
                    for k in ("mean", "std"))):
        raise BundleConfigError(f"{where}: the last transform must be {EVAL_TRANSFORM} with image_size, mean "
                                f"and std numbers; it {edited}")
    for n, step in enumerate(steps, 1):
        label = f"{source}: preprocess step {n}"
        if not isinstance(step, dict):
            raise BundleConfigError(f"{label} must be an object with `_target_`; it {edited}")
        target = step.get("_target_")
        name = target[len("monai.transforms."):] if isinstance(target, str) and \
            target.startswith("monai.transforms.") else target
        check_step(name, {k: v for k, v in step.items() if k != "_target_"}, label)


def check_config_file(path: str | os.PathLike) -> None:
    """A bundle config file (JSON, or YAML as MONAI also reads) read as plain data and checked."""
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_json, load_yaml

    path = Path(path)
    try:
        data = load_yaml(path) if path.suffix in (".yaml", ".yml") else load_json(path)
    except FileFormatError as exc:
        raise BundleConfigError(str(exc)) from None
    except OSError as exc:
        raise BundleConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    check_inference_config(data, str(path))
