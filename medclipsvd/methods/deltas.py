"""The weight-parametrisation baselines: LoRA (rank 2 on q, k, v of both towers, as CLIP-LoRA) and full
fine-tuning of the SVD preset's matrices.

They are written here as W = W0 + ΔW on the selected rows of each matrix, so they work on fused q/k/v
matrices (nn.MultiheadAttention, timm qkv) as well as on separate ones, and merge into plain weights for
evaluation. Their adapter folder (methods/adapter_folder.py): adapter_config.json (format, method, base
backbone and fingerprint, layers, the sha256 of the weights) + weights.safetensors; folders written before
0.3 hold the same record as method.json."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from medclipsvd.errors import AdapterError
from medclipsvd.methods.adapter_folder import CONFIG_FILE, record_path
from medclipsvd.methods.prepared import Prepared, _freeze
from medclipsvd.methods.targets import MATRICES, WeightSlice, weight_slices

DELTA_FILE = "weights.safetensors"
FORMAT = "medclipsvd.delta-adapter"
FORMAT_VERSION = 1
LORA_RANK = 2
LORA_ALPHA = 1.0


# ---------------------------------------------------------------------------------------------
class _RowDelta(nn.Module):
    """Parametrisation W -> W + Δ on rows [a, b) (all rows when None). Δ comes from `delta()`."""

    def __init__(self, rows: tuple[int, int] | None):
        super().__init__()
        self.rows = rows

    def delta(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        d = self.delta().to(W.dtype)
        if self.rows is None:
            return W + d
        a, b = self.rows
        return torch.cat([W[:a], W[a:b] + d, W[b:]], dim=0)


class LoRADelta(_RowDelta):
    """Δ = (alpha / r) · B A with A Kaiming-uniform and B zero, so training starts from the base model."""

    def __init__(self, out_features: int, in_features: int, rows, rank: int = LORA_RANK, alpha: float = LORA_ALPHA):
        super().__init__(rows)
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def delta(self) -> torch.Tensor:
        return self.scale * (self.B @ self.A)


class FullDelta(_RowDelta):
    """Δ is a free matrix: full fine-tuning of exactly the selected rows."""

    def __init__(self, out_features: int, in_features: int, rows):
        super().__init__(rows)
        self.D = nn.Parameter(torch.zeros(out_features, in_features))

    def delta(self) -> torch.Tensor:
        return self.D


def _attach(slices: list[WeightSlice], make: Callable[[WeightSlice], _RowDelta]) -> dict[str, _RowDelta]:
    deltas = {}
    for s in slices:
        mod = make(s).to(getattr(s.module, s.param).device)
        parametrize.register_parametrization(s.module, s.param, mod, unsafe=True)
        deltas[s.name] = mod
    return deltas


def _merge_parametrizations(slices: list[WeightSlice]) -> None:
    done = set()
    for s in slices:
        key = (id(s.module), s.param)
        if key in done or not parametrize.is_parametrized(s.module, s.param):
            continue
        parametrize.remove_parametrizations(s.module, s.param, leave_parametrized=True)
        done.add(key)


def _delta_method(method: str, backbone, slices: list[WeightSlice], lr: float, info: dict) -> Prepared:
    _freeze(backbone)
    if method == "lora":
        deltas = _attach(slices, lambda s: LoRADelta(*s.shape, s.rows))
    else:
        deltas = _attach(slices, lambda s: FullDelta(*s.shape, s.rows))
    params = {f"{name}.{pname}": p for name, mod in deltas.items() for pname, p in mod.named_parameters()}
    fingerprint = info.pop("fingerprint")

    def save(directory: Path) -> Path:
        import hashlib

        from medclipsvd.io import safetensors_bytes, write_bytes, write_json
        from medclipsvd.svd.adapter_io import check_finite

        directory = Path(directory)
        tensors = {k: v.detach().cpu().contiguous() for k, v in params.items()}
        check_finite(tensors, f"refusing to write the {method} adapter to {directory}")
        blob = safetensors_bytes(tensors)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": method, "backbone": backbone.name,
                "fingerprint": fingerprint, **info, "weights_sha256": hashlib.sha256(blob).hexdigest()}
        write_bytes(directory / DELTA_FILE, blob)  # tensors first: the meta names their hash
        write_json(directory / CONFIG_FILE, meta)
        return directory

    return Prepared(method, params, any(s.tower == "text" for s in slices), lr, save,
                    lambda: _merge_parametrizations(slices), info)


def prepare(method: str, backbone, hp, lr: float) -> Prepared:
    """`method` ("lora" | "full") on the matrices of ``hp.layers``."""
    fingerprint = backbone.fingerprint()  # before any change to the weights
    if method == "lora":
        slices = weight_slices(backbone, layers=hp.layers, matrices=("q", "k", "v"))
        info = {"rank": LORA_RANK, "alpha": LORA_ALPHA, "layers": hp.layers, "matrices": ["q", "k", "v"]}
    else:
        slices = weight_slices(backbone, layers=hp.layers, matrices=MATRICES)
        info = {"layers": hp.layers, "matrices": list(MATRICES)}
    info["fingerprint"] = fingerprint
    return _delta_method(method, backbone, slices, lr, info)


def prepare_lora(backbone, hp, lr: float) -> Prepared:
    return prepare("lora", backbone, hp, lr)


def prepare_full(backbone, hp, lr: float) -> Prepared:
    return prepare("full", backbone, hp, lr)


class _Layers:
    """The one hyper-parameter loading needs (which layers were adapted)."""

    def __init__(self, layers):
        self.layers = layers


def load(backbone, adapter_dir: Path, meta: dict) -> None:
    """A LoRA / full adapter (its adapter_config.json, or older method.json, read as `meta`) onto
    `backbone`, merged into the weights."""
    meta_path = record_path(adapter_dir)
    if not isinstance(meta, dict) or not isinstance(meta.get("fingerprint"), str) or \
            not isinstance(meta.get("layers", "all"), (str, list)):
        raise AdapterError(f"{meta_path}: fields 'method', 'fingerprint' (and 'layers') are missing or of the "
                           "wrong type; the file is damaged or was edited")
    method = meta.get("method")
    if method not in ("lora", "full"):
        raise AdapterError(f"{meta_path}: unknown method {method!r}")
    if meta_path.name == CONFIG_FILE and (meta.get("format") != FORMAT or
                                          not isinstance(meta.get("format_version"), int)):
        raise AdapterError(f"{meta_path} is not a medclipsvd {method} adapter (format {meta.get('format')!r}, "
                           f"version {meta.get('format_version')!r}); the file is damaged or was edited")
    if meta_path.name == CONFIG_FILE and meta["format_version"] > FORMAT_VERSION:
        raise AdapterError(f"{meta_path} uses adapter format {meta['format_version']}, newer than this "
                           f"medclipsvd ({FORMAT_VERSION}); upgrade medclipsvd")
    if meta.get("fingerprint") != backbone.fingerprint():
        from medclipsvd.errors import AdapterMismatchError

        raise AdapterMismatchError(f"{adapter_dir} was trained on base weights {meta.get('fingerprint')} "
                                   f"({meta.get('backbone')}); the loaded backbone is {backbone.fingerprint()} "
                                   f"({backbone.name}). Load the same backbone and weights it was trained on.")
    prepared = prepare(method, backbone, _Layers(meta.get("layers", "all")), 0.0)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from medclipsvd.io.hashing import sha256_file
    from medclipsvd.svd.adapter_io import check_finite

    delta = adapter_dir / DELTA_FILE
    if not delta.is_file():
        raise AdapterError(f"{delta} is missing; the adapter folder is incomplete")
    if meta.get("weights_sha256") and sha256_file(delta) != meta["weights_sha256"]:
        raise AdapterError(f"{delta} does not match its {meta_path.name} (sha256 differs): the files come from "
                           "different saves or were altered")
    try:
        tensors = load_file(str(delta))
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{delta} cannot be read ({exc}); the adapter file is damaged") from None
    check_finite(tensors, str(delta))
    if set(tensors) != set(prepared.params):
        raise AdapterError(f"{adapter_dir / DELTA_FILE} holds other tensors than a {method} adapter of "
                           f"{backbone.name} should")
    with torch.no_grad():
        for k, p in prepared.params.items():
            p.copy_(tensors[k])
    prepared.merge()
