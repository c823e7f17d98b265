"""Adapter files (PEFT-like): a folder with `adapter_config.json` and `adapter.safetensors`.

The safetensors file holds only the trained singular values, one 1-D float tensor per target name. The JSON
names the base backbone, its weight source and the fingerprint of the base weights, so an adapter is never
applied to a model it was not made from, and the sha256 of the safetensors file, so a tensor file from
another save (or an altered one) is refused. Nothing is pickled; both files are written atomically; σ must
be finite floats, and within ``SIGMA_LIMIT`` times the scale of their base matrix, both when saved and when
loaded. The format is specified in docs/adapters.md."""
from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any, Optional

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

import medclipsvd
from medclipsvd.backbones.openclip_arch import is_source_name
from medclipsvd.errors import AdapterError, AdapterMismatchError
from medclipsvd.io.hashing import sha256_file
from medclipsvd.svd.adapt import adapt, adapt_state, initial_sigmas, load_sigmas, sigma_parameters
from medclipsvd.svd.targets import TargetSpec

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"
FORMAT = "medclipsvd.sigma-adapter"
FORMAT_VERSION = 1
# |σ| of a matrix may reach this many times the largest singular value of its base matrix (taken as at least
# 1). σ-only training moves σ by about lr per step (1e-3..1e-2), so trained adapters stay within a few times
# their base; 1e3 leaves room for any real run and refuses values that overflow the forward pass (an edited
# σ = 1e30 made `predict` print NaN probabilities). Negative σ are allowed: nothing in training keeps σ >= 0,
# and a small singular value may cross zero (it flips that direction, a valid matrix).
SIGMA_LIMIT = 1e3


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    source: Optional[str] = None
    fingerprint: str


class _AdapterConfig(BaseModel):
    """The fields load_adapter relies on (others are kept as they are)."""
    model_config = ConfigDict(extra="allow")
    format: str
    format_version: int
    backbone: _Base
    targets: dict[str, Any]
    preset: Optional[str] = None
    weights_sha256: Optional[str] = None  # absent in adapters written before 0.x: then not checked


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """AdapterError unless every tensor is floating point and finite (names the first offender)."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise AdapterError(f"{where}: tensor {name} has dtype {str(t.dtype).removeprefix('torch.')}; adapter "
                               "values must be floating point (the file was not written by medclipsvd or was edited)")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise AdapterError(f"{where}: tensor {name} holds {bad} non-finite value(s) (NaN/inf); the adapter "
                               "comes from a diverged training and cannot be used — retrain with a lower --lr")


def check_sigma_range(sigmas: dict[str, torch.Tensor], base: dict[str, torch.Tensor], where: str, fix: str) -> None:
    """AdapterError unless every |σ| is at most SIGMA_LIMIT x max(1, largest σ₀ of the same base matrix)."""
    for name, t in sigmas.items():
        b = base.get(name)
        if b is None or not t.numel():
            continue  # names are matched by load_sigmas, which names what is missing
        scale = max(float(b.detach().abs().max()) if b.numel() else 0.0, 1.0)
        top = float(t.detach().abs().max())
        if top > SIGMA_LIMIT * scale:
            raise AdapterError(f"{where}: tensor {name} holds σ = {top:.3g}, {top / scale:.3g} times its base "
                               f"matrix's scale ({scale:.3g}; at most {SIGMA_LIMIT:g} times is accepted, or the "
                               f"model's outputs overflow); {fix}")


def save_adapter(backbone, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the adapter of an adapted backbone to `directory` (created if needed); returns the folder.
    Refuses (AdapterError) to write non-finite σ."""
    from medclipsvd.io import safetensors_bytes, write_bytes, write_json

    state = adapt_state(backbone)
    if state is None:
        raise AdapterError("nothing to save: the backbone is not adapted (or was merged)")
    directory = Path(directory)
    sigmas = {name: p.detach().to("cpu", torch.float32).contiguous() for name, p in sigma_parameters(backbone).items()}
    check_finite(sigmas, f"refusing to write the adapter to {directory}")
    check_sigma_range(sigmas, initial_sigmas(backbone), f"refusing to write the adapter to {directory}",
                      "the training diverged - retrain with a lower --lr")
    blob = safetensors_bytes(sigmas, metadata={"format": FORMAT})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": "svd",  # the one adapter folder format's method key (medclipsvd/methods/adapter_folder.py)
        "library_version": medclipsvd.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": {"name": backbone.name, "source": backbone.source, "fingerprint": state.base_fingerprint},
        "preset": state.preset,
        "targets": state.spec.model_dump(mode="json"),
        "target_names": list(state.targets),
        "trainable_parameters": int(sum(t.numel() for t in sigmas.values())),
        "dtype": "float32",
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
    }
    if extra:
        config["extra"] = extra
    # tensors first, then the config naming their hash: a crash in between leaves a pair that load refuses
    write_bytes(directory / WEIGHTS_NAME, blob)
    write_json(directory / CONFIG_NAME, config)
    return directory


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def read_adapter_config(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{directory} is not an adapter folder: {CONFIG_NAME} is missing "
                           f"(an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}, written by save_adapter "
                           "or `medclipsvd train`)")
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_json

    try:
        config = load_json(path)  # UTF-8, bounded size and depth
    except FileFormatError as exc:
        raise AdapterError(f"{path}: {exc.problem}; the file is damaged: restore it from the run's "
                           "MLflow artefacts or retrain") from None
    except OSError as exc:
        raise AdapterError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if isinstance(config, dict) and config.get("method", "svd") != "svd":
        raise AdapterError(f"{path} holds a {config.get('method')!r} adapter, not a σ-adapter; load it with "
                           "medclipsvd.methods.load_trained")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise AdapterError(f"{path} is not a medclipsvd σ-adapter (format {found!r})")
    try:
        checked = _AdapterConfig.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        what = "is missing" if first["type"] == "missing" else f"is invalid ({first['msg']})"
        raise AdapterError(f"{path}: field {_field(first['loc'])!r} {what} ({exc.error_count()} problem(s)); the "
                           "file is damaged or was edited: restore it from the run's MLflow artefacts or "
                           "retrain") from None
    if checked.format_version > FORMAT_VERSION:
        raise AdapterError(f"{path} uses adapter format {checked.format_version}, newer than this "
                           f"medclipsvd ({FORMAT_VERSION}); upgrade medclipsvd")
    try:
        TargetSpec(**config["targets"])
    except (ValidationError, TypeError, ValueError) as exc:
        raise AdapterError(f"{path}: field 'targets' is invalid ({str(exc).splitlines()[0]}); the file is "
                           "damaged or was edited") from None
    return config


def check_base(backbone, config: dict, directory: str | Path) -> None:
    """Raise AdapterMismatchError unless `backbone` is the base the adapter was made from."""
    base = config["backbone"]
    # a model named by its folder or hub id is identified by its weights: the folder may move
    same_name = base["name"] == backbone.name or (is_source_name(base["name"]) and is_source_name(backbone.name))
    if not same_name or base["fingerprint"] != backbone.fingerprint():
        raise AdapterMismatchError(
            f"the adapter in {directory} was made for backbone {base['name']!r} (weights {base.get('source')}, "
            f"fingerprint {base['fingerprint'][:12]}), but the given backbone is {backbone.name!r} "
            f"(weights {backbone.source}, fingerprint {backbone.fingerprint()[:12]}). Load the base it was made "
            f"from, e.g. load_backbone({base['name']!r}, weights=...), or `--backbone {base['name']}`."
        )


def read_sigmas(directory: str | Path, config: dict | None = None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The σ tensors of an adapter folder, checked: hash as recorded in the config, finite floats."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config = config if config is not None else read_adapter_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise AdapterError(f"{weights} is missing; the adapter folder is incomplete")
    expected = config.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise AdapterError(f"{weights} does not match its {CONFIG_NAME} (sha256 differs): the files come from "
                           "different saves or were altered; restore the adapter folder from the run's artefacts")
    try:
        sigmas = load_file(str(weights), device=device)
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{weights} cannot be read ({exc}); the adapter file is damaged") from None
    check_finite(sigmas, str(weights))
    return sigmas


def load_adapter(backbone, directory: str | Path, *, cache_dir=None, progress: bool = False):
    """Adapt `backbone` with the adapter's targets and set its σ; returns the backbone.

    Refuses (AdapterMismatchError) an adapter made from another backbone or other base weights, and
    (AdapterError) damaged files, non-float, non-finite or out-of-range σ (``SIGMA_LIMIT``)."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    check_base(backbone, config, directory)
    sigmas = read_sigmas(directory, config, device=str(next(backbone.parameters()).device))
    spec = TargetSpec(**config["targets"])
    state = adapt_state(backbone)
    if state is None:
        adapt(backbone, spec, cache_dir=cache_dir, progress=progress)
        state = adapt_state(backbone)
        state.preset = config.get("preset")
    elif state.spec != spec:
        raise AdapterError(f"the backbone is already adapted with other targets than the adapter in {directory}")
    check_sigma_range(sigmas, initial_sigmas(backbone), str(directory / WEIGHTS_NAME),
                      "the file was edited or comes from a diverged training - restore the adapter folder from "
                      "the run's artefacts, or retrain with a lower --lr")
    load_sigmas(backbone, sigmas, directory / WEIGHTS_NAME)
    return backbone
