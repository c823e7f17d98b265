"""Inject σ-only SVD adaptation into a backbone (`adapt`), inspect it, and fold it back (`merge`)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medclipsvd.errors import AdapterError
from medclipsvd.svd.decompose import SVDCache
from medclipsvd.svd.layers import Mode, SVDLinear, SVDSelfAttention
from medclipsvd.svd.targets import Candidate, TargetSpec, resolve_spec, select_targets


@dataclass(frozen=True)
class TargetInfo:
    name: str
    tower: str
    layer: int
    matrix: str
    shape: tuple[int, int]
    slot: str
    part: str


@dataclass
class AdaptState:
    spec: TargetSpec
    preset: str | None
    base_fingerprint: str
    targets: dict[str, TargetInfo]
    installed: list[str] = field(default_factory=list)  # module paths replaced by SVD modules
    cache_hits: int = 0
    cache_misses: int = 0


def _parent(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    *head, leaf = path.split(".")
    module = root
    for part in head:
        module = getattr(module, part)
    return module, leaf


def _get(root: nn.Module, path: str) -> nn.Module:
    parent, leaf = _parent(root, path)
    return getattr(parent, leaf)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, leaf = _parent(root, path)
    setattr(parent, leaf, module)


def adapt_state(backbone) -> AdaptState | None:
    return getattr(backbone, "_svd_state", None)


def _require_state(backbone) -> AdaptState:
    state = adapt_state(backbone)
    if state is None:
        raise AdapterError(f"backbone {backbone.name!r} is not adapted; call adapt(backbone, 'paper') first")
    return state


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin.requires_grad_(False)


def adapt(backbone, targets: str | TargetSpec | dict = "paper", *, cache_dir=None, mode: Mode = "auto",
          progress: bool = False):
    """Make only the singular values of the targeted matrices trainable, in place; returns the backbone.

    Every targeted matrix W is replaced by U·diag(σ)·Vhᵀ from its full SVD (float64, cached on disk by
    content hash, `cache_dir=False` to disable); everything else is frozen. At initialisation the outputs
    equal the original model's up to float round-off."""
    if adapt_state(backbone) is not None:
        raise AdapterError(f"backbone {backbone.name!r} is already adapted; merge() it or load a fresh one")
    spec, preset = resolve_spec(targets)
    fingerprint = backbone.fingerprint()  # of the base weights, before any module changes
    chosen = select_targets(backbone, spec)
    model = backbone.model
    model.requires_grad_(False)
    cache = SVDCache(cache_dir)

    by_slot: dict[str, list[Candidate]] = defaultdict(list)
    for c in chosen:
        by_slot[c.slot].append(c)

    # MultiheadAttention holds q/k/v in one parameter and owns out_proj: replace the whole module.
    mha_slots: dict[str, dict[str, nn.Module]] = defaultdict(dict)
    infos: dict[str, TargetInfo] = {}
    bar = None
    if progress:  # one unit per matrix (a fused q/k/v projection holds three)
        from medclipsvd.io.progress import progress_bar

        bar = progress_bar(total=len(chosen), desc="SVD set-up", unit="matrix")
    for slot, cands in by_slot.items():
        parent, leaf = _parent(model, slot)
        if isinstance(parent, nn.MultiheadAttention):
            weight, bias = ((parent.in_proj_weight, parent.in_proj_bias) if leaf == "in_proj"
                            else (parent.out_proj.weight, parent.out_proj.bias))
        else:
            linear = getattr(parent, leaf)
            weight, bias = linear.weight, linear.bias
        parts_wanted = {c.part: c for c in cands}
        part_names = ["q", "k", "v"] if cands[0].part else [""]
        rows = weight.shape[0] // len(part_names)
        parts = {}
        for i, part in enumerate(part_names):
            parts[part] = cache.get(weight[i * rows:(i + 1) * rows]) if part in parts_wanted else None
            if bar is not None and part in parts_wanted:
                bar.update(1)
        module = SVDLinear(weight, bias, parts, mode=mode)
        for c in cands:
            infos[c.name] = TargetInfo(c.name, c.tower, c.layer, c.matrix, (rows, weight.shape[1]), c.slot, c.part)
        if isinstance(parent, nn.MultiheadAttention):
            mha_path = slot.rsplit(".", 1)[0]
            mha_slots[mha_path][leaf] = module
        else:
            _set(model, slot, module)

    if bar is not None:
        bar.close()
    installed = [s for s in by_slot if not isinstance(_parent(model, s)[0], (nn.MultiheadAttention,))]
    for mha_path, new in mha_slots.items():
        mha = _get(model, mha_path)
        in_proj = new["in_proj"] if "in_proj" in new else _plain_linear(mha.in_proj_weight, mha.in_proj_bias)
        out_proj = new["out_proj"] if "out_proj" in new else _plain_linear(mha.out_proj.weight, mha.out_proj.bias)
        _set(model, mha_path, SVDSelfAttention(mha, in_proj, out_proj))
        installed.append(mha_path)

    ordered = {c.name: infos[c.name] for c in chosen}
    backbone._svd_state = AdaptState(spec, preset, fingerprint, ordered, installed, cache.hits, cache.misses)
    return backbone


def adapted_modules(backbone) -> dict[str, TargetInfo]:
    return dict(_require_state(backbone).targets)


def _svd_linear(backbone, info: TargetInfo) -> SVDLinear:
    return _get(backbone.model, info.slot)


def sigma_parameters(backbone) -> dict[str, nn.Parameter]:
    """{target name: σ} — the only trainable parameters of an adapted backbone."""
    return {name: _svd_linear(backbone, info).sigma_of(info.part)
            for name, info in _require_state(backbone).targets.items()}


def initial_sigmas(backbone) -> dict[str, torch.Tensor]:
    """{target name: σ₀}, the singular values of the base weights."""
    return {name: _svd_linear(backbone, info).sigma0_of(info.part)
            for name, info in _require_state(backbone).targets.items()}


def effective_weights(backbone) -> dict[str, torch.Tensor]:
    """{target name: U·diag(σ)·Vhᵀ} with the current σ (detached)."""
    with torch.no_grad():
        return {name: _svd_linear(backbone, info).part_weight(info.part).detach()
                for name, info in _require_state(backbone).targets.items()}


def set_mode(backbone, mode: Mode) -> None:
    """Force the factorised or rebuilt computation (benchmarks, tests); 'auto' picks per call."""
    for path in _require_state(backbone).installed:
        for m in _get(backbone.model, path).modules():
            if isinstance(m, SVDLinear):
                m.mode = mode


def trainable_count(backbone) -> int:
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)


@torch.no_grad()
def merge(backbone):
    """Replace every SVD module by a plain module holding the adapted weight; returns the backbone.

    The merged model has the base model's structure, so inference costs exactly what the base costs."""
    state = _require_state(backbone)
    for path in state.installed:
        _set(backbone.model, path, _get(backbone.model, path).merge())
    backbone._svd_state = None
    backbone._merged_from = state
    return backbone


def load_sigmas(backbone, sigmas: dict[str, torch.Tensor], source: str | Path = "the given tensors") -> None:
    """Copy σ values into an adapted backbone, checking names and shapes."""
    params = sigma_parameters(backbone)
    missing = sorted(set(params) - set(sigmas))
    extra = sorted(set(sigmas) - set(params))
    if missing or extra:
        raise AdapterError(f"σ in {source} do not match the adapted matrices: {len(missing)} missing "
                           f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    for name, p in params.items():
        value = sigmas[name]
        if value.shape != p.shape:
            raise AdapterError(f"σ for {name} in {source} has shape {tuple(value.shape)}, "
                               f"expected {tuple(p.shape)}")
        if not value.is_floating_point():  # an int tensor would be cast silently and lose the trained values
            raise AdapterError(f"σ for {name} in {source} has dtype {str(value.dtype).removeprefix('torch.')}; "
                               "σ must be floating point")
        if not bool(torch.isfinite(value).all()):
            raise AdapterError(f"σ for {name} in {source} holds NaN/inf values (a diverged training); retrain "
                               "with a lower --lr")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(sigmas[name].to(p.dtype))
