"""Adapter files (PEFT-like): a folder with `adapter_config.json` and `adapter.safetensors`.

The safetensors file holds only the trained singular values, one 1-D tensor per target name. The JSON
names the base backbone, its weight source and the fingerprint of the base weights, so an adapter is never
applied to a model it was not made from. Nothing is pickled. The format is specified in docs/adapters.md."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

import medclipsvd
from medclipsvd.errors import AdapterError, AdapterMismatchError
from medclipsvd.svd.adapt import adapt, adapt_state, load_sigmas, sigma_parameters
from medclipsvd.svd.targets import TargetSpec

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"
FORMAT = "medclipsvd.sigma-adapter"
FORMAT_VERSION = 1


def save_adapter(backbone, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the adapter of an adapted backbone to `directory` (created if needed); returns the folder."""
    from safetensors.torch import save_file

    state = adapt_state(backbone)
    if state is None:
        raise AdapterError("nothing to save: the backbone is not adapted (or was merged)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sigmas = {name: p.detach().to("cpu", torch.float32).contiguous() for name, p in sigma_parameters(backbone).items()}
    save_file(sigmas, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": medclipsvd.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": {"name": backbone.name, "source": backbone.source, "fingerprint": state.base_fingerprint},
        "preset": state.preset,
        "targets": state.spec.model_dump(mode="json"),
        "target_names": list(state.targets),
        "trainable_parameters": int(sum(t.numel() for t in sigmas.values())),
        "dtype": "float32",
    }
    if extra:
        config["extra"] = extra
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{directory} is not an adapter folder: {CONFIG_NAME} is missing "
                           f"(an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}, written by save_adapter "
                           "or `medclipsvd train`)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{path} is not valid JSON ({exc})") from None
    if config.get("format") != FORMAT:
        raise AdapterError(f"{path} is not a medclipsvd σ-adapter (format {config.get('format')!r})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise AdapterError(f"{path} uses adapter format {config['format_version']}, newer than this "
                           f"medclipsvd ({FORMAT_VERSION}); upgrade medclipsvd")
    return config


def check_base(backbone, config: dict, directory: str | Path) -> None:
    """Raise AdapterMismatchError unless `backbone` is the base the adapter was made from."""
    base = config["backbone"]
    if base["name"] != backbone.name or base["fingerprint"] != backbone.fingerprint():
        raise AdapterMismatchError(
            f"the adapter in {directory} was made for backbone {base['name']!r} (weights {base['source']}, "
            f"fingerprint {base['fingerprint'][:12]}), but the given backbone is {backbone.name!r} "
            f"(weights {backbone.source}, fingerprint {backbone.fingerprint()[:12]}). Load the base it was made "
            f"from, e.g. load_backbone({base['name']!r}, weights=...), or `--backbone {base['name']}`."
        )


def load_adapter(backbone, directory: str | Path, *, cache_dir=None, progress: bool = False):
    """Adapt `backbone` with the adapter's targets and set its σ; returns the backbone.

    Refuses (AdapterMismatchError) an adapter made from another backbone or other base weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_adapter_config(directory)
    check_base(backbone, config, directory)
    spec = TargetSpec(**config["targets"])
    state = adapt_state(backbone)
    if state is None:
        adapt(backbone, spec, cache_dir=cache_dir, progress=progress)
        state = adapt_state(backbone)
        state.preset = config.get("preset")
    elif state.spec != spec:
        raise AdapterError(f"the backbone is already adapted with other targets than the adapter in {directory}")
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise AdapterError(f"{weights} is missing; the adapter folder is incomplete")
    try:
        sigmas = load_file(str(weights), device=str(next(backbone.parameters()).device))
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{weights} cannot be read ({exc}); the adapter file is damaged") from None
    load_sigmas(backbone, sigmas, weights)
    return backbone
