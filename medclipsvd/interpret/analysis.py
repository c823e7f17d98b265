"""End-to-end interpretation of a σ-adapter: load base and adapted model, compare weights, describe the
most changed vision heads with TextSpan, and return an `InterpretResult` for the report writer."""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from medclipsvd.device import auto_precision, autocast, check_precision
from medclipsvd.interpret.contributions import HeadContributionRecorder, attention_weights, vision_parts
from medclipsvd.interpret.descriptions import default_pool_for, load_descriptions
from medclipsvd.interpret.errors import InterpretError
from medclipsvd.interpret.images import ImageRef, batches
from medclipsvd.interpret.report import HeadDescription, InterpretResult
from medclipsvd.interpret.spectra import HeadChange, MatrixChange, head_changes, matrix_changes
from medclipsvd.interpret.textspan import textspan


@dataclass
class ModelPair:
    """The base model and the adapted model (merged to plain modules), plus the adapter's σ."""

    before: object        # Backbone
    after: object         # Backbone, merged
    infos: dict           # target name -> TargetInfo
    sigmas: dict[str, torch.Tensor]
    sigma0s: dict[str, torch.Tensor]
    adapter: str


def pair_from_adapted(adapted, base=None, adapter: str = "(in memory)", in_place: bool = False) -> ModelPair:
    """Build a ModelPair from an adapted (not merged) backbone. `base` is the plain base model; if omitted,
    it is rebuilt from the adapter's σ₀ (equal to the base weights up to float round-off). With
    `in_place`, `adapted` itself is merged instead of a copy (saves a copy of a full-size model)."""
    from medclipsvd.svd import adapted_modules, initial_sigmas, merge, sigma_parameters

    infos = adapted_modules(adapted)
    sigmas = {k: v.detach().clone().cpu() for k, v in sigma_parameters(adapted).items()}
    sigma0s = {k: v.detach().clone().cpu() for k, v in initial_sigmas(adapted).items()}
    if base is None:
        base = copy.deepcopy(adapted)
        with torch.no_grad():
            for name, p in sigma_parameters(base).items():
                p.copy_(sigma0s[name].to(p))
        merge(base)
    after = merge(adapted if in_place else copy.deepcopy(adapted))
    return ModelPair(base, after, infos, sigmas, sigma0s, adapter)


def load_pair(adapter_dir: str | Path, weights: str | None = None, text_dir: str | None = None,
              device: str = "cpu", progress: bool = False) -> ModelPair:
    """Load the adapter's base backbone (from `weights`, else the source recorded in the adapter) and a
    copy with the adapter applied."""
    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import load_adapter, read_adapter_config

    config = read_adapter_config(adapter_dir)
    base_cfg = config["backbone"]
    source = weights or base_cfg.get("source") or ""
    kwargs: dict = {"device": device, "text_dir": text_dir}
    if weights is None and source.startswith("random-init"):
        # Adapters made on random weights (tests, benchmarks) record the seed; rebuild the same weights.
        seed = int(source.split("seed=")[-1]) if "seed=" in source else 0
        kwargs.update(random_init=True, seed=seed)
    elif source:
        kwargs["weights"] = source
    base = load_backbone(base_cfg["name"], **kwargs)
    adapted = load_adapter(copy.deepcopy(base), adapter_dir, progress=progress)
    return pair_from_adapted(adapted, base=base, adapter=str(adapter_dir), in_place=True)


def _tower_attention(bb, tower: str) -> dict[tuple[str, int], object]:
    return {(tower, i): attention_weights(block) for i, block in enumerate(bb.blocks(tower))}


def weight_views(pair: ModelPair, towers: Iterable[str] = ("vision", "text")
                 ) -> tuple[list[MatrixChange], list[HeadChange]]:
    """σ change per adapted matrix and per-head spectrum change, both ranked largest first."""
    matrices = matrix_changes(pair.infos, pair.sigmas, pair.sigma0s)
    adapted_towers = {i.tower for i in pair.infos.values()}
    before, after = {}, {}
    with torch.no_grad():
        for tower in towers:
            if tower not in adapted_towers:
                continue
            before.update(_tower_attention(pair.before, tower))
            after.update(_tower_attention(pair.after, tower))
    return matrices, head_changes(before, after)


@torch.no_grad()
def encode_texts(bb, texts: list[str], batch_size: int = 128, precision: str = "fp32") -> torch.Tensor:
    """Normalised text embeddings [M, D] (float32), computed in `precision`."""
    device = next(bb.parameters()).device
    prec = resolve_precision(precision, device)
    text_tower = [m for name, m in bb.model.named_children() if name != "visual"]
    with contextlib.ExitStack() as stack:
        for m in text_tower:
            stack.enter_context(_autocast_weight_cache(m, prec != "fp32"))
        stack.enter_context(autocast(device, prec))
        out = [bb.encode_text(bb.tokenize(texts[i:i + batch_size])).float().cpu()
               for i in range(0, len(texts), batch_size)]
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' -> what medclipsvd/device.py chooses (bf16 where the hardware multiplies bfloat16 natively,
    else fp32); an explicit precision is run as given (the CLI refuses, before this, one the machine cannot
    run natively). On such CPUs a bf16 forward is about 4x faster; the per-head decomposition itself always
    runs in float32 and is checked against the module outputs with a bf16-sized tolerance."""
    check_precision(precision)
    return auto_precision(device) if precision == "auto" else precision


@contextlib.contextmanager
def _autocast_weight_cache(module: torch.nn.Module, enabled: bool):
    """Autocast keeps one bf16 copy of a weight per autocast region only for parameters that require grad;
    frozen weights (every adapted/merged model) are re-cast at every use, which made the bf16 forward of a
    merged ViT-B/16 4x slower on CPU (17.4 s vs 4.4 s for 16 images). Inside no_grad, flagging them for
    the duration builds no graph and only enables the cache."""
    frozen = [p for p in module.parameters() if not p.requires_grad] if enabled else []
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


@torch.no_grad()
def head_contributions(bb, images: Iterable[torch.Tensor], heads: list[tuple[int, int]],
                       on_batch: Callable[[int], None] | None = None, precision: str = "fp32"
                       ) -> dict[tuple[int, int], torch.Tensor]:
    """Direct contributions [N, D] of the given vision (layer, head)s over preprocessed image batches."""
    device = next(bb.parameters()).device
    prec = resolve_precision(precision, device)
    tol = 5e-2 if prec != "fp32" else 1e-3
    with HeadContributionRecorder(bb.model.visual, heads, check_tol=tol) as rec, \
            _autocast_weight_cache(bb.model.visual, prec != "fp32"), autocast(device, prec):
        for x in images:
            bb.encode_image(x.to(device))
            if on_batch:
                on_batch(len(x))
    return rec.result()


def describe_heads(pair: ModelPair, heads: list[HeadChange], refs: list[ImageRef], texts: list[str],
                   n_texts: int = 5, batch_size: int = 32, timings: dict | None = None,
                   on_batch: Callable[[int], None] | None = None, precision: str = "fp32") -> list[HeadDescription]:
    """TextSpan descriptions of each given vision head, on the base model and on the adapted model."""
    if len(refs) < 2:
        raise InterpretError(f"TextSpan needs at least 2 images, got {len(refs)}")
    keys = [(h.layer, h.head) for h in heads if h.tower == "vision"]
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    # Decode and preprocess once for both models (base and adapted share the preprocessing);
    # 256 images at 224 px take about 150 MB.
    images = list(batches(refs, pair.before.preprocess, batch_size))
    timings["decode"] = time.perf_counter() - t0
    spans = {}
    for label, bb in (("before", pair.before), ("after", pair.after)):
        t0 = time.perf_counter()
        contrib = head_contributions(bb, images, keys, on_batch, precision)
        t1 = time.perf_counter()
        emb = encode_texts(bb, texts, precision=precision)
        spans[label] = {k: textspan(contrib[k], emb, texts, n_select=n_texts) for k in keys}
        timings[f"images_{label}"] = t1 - t0
        timings[f"texts_{label}"] = time.perf_counter() - t1
    return [HeadDescription(h, spans["before"][(h.layer, h.head)], spans["after"][(h.layer, h.head)])
            for h in heads if h.tower == "vision"]


def interpret(pair: ModelPair, refs: list[ImageRef] | None = None, *, pool: str | Path = "auto",
              n_heads: int = 3, n_texts: int = 5, batch_size: int = 32, image_source: str = "",
              on_batch: Callable[[int], None] | None = None, precision: str = "fp32") -> InterpretResult:
    """The whole analysis. Without images only the weight views are computed. `precision` (fp32, bf16,
    auto) applies to the forward passes of images and descriptions; weights are compared in float64."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    matrices, heads = weight_views(pair)
    timings["weights"] = time.perf_counter() - t0
    num_layers = {t: pair.before.num_layers(t) for t in ("vision", "text")}
    result = InterpretResult(pair.before.name, pair.adapter, matrices, heads, num_layers, timings=timings)
    vision_heads = [h for h in heads if h.tower == "vision"][:n_heads]
    if not refs:
        result.notes.append("No images given: head descriptions (TextSpan) were skipped. "
                            "Pass --images DIR or --pipeline NAME --data-root DIR.")
    elif n_heads <= 0:
        result.notes.append("Head descriptions were not requested (--heads 0).")
    elif not vision_heads:
        result.notes.append("No vision-tower layer was adapted, so no head is described with TextSpan.")
    else:
        if vision_heads[0].ov_change < 1e-6 and vision_heads[0].qk_change < 1e-6:
            result.notes.append("The vision tower's attention maps did not change (only its MLPs were adapted); "
                                "the described heads are not changed ones, their ranking is float round-off.")
        vision_parts(pair.before.model.visual)  # a tower TextSpan cannot decompose is refused before any work
        pool_name = default_pool_for(pair.before.name) if str(pool) == "auto" else str(pool)
        texts = load_descriptions(pool_name)
        precision = resolve_precision(precision, next(pair.before.parameters()).device)
        result.described = describe_heads(pair, vision_heads, refs, texts, n_texts, batch_size, timings, on_batch,
                                          precision)
        result.images, result.n_images, result.pool = image_source, len(refs), Path(pool_name).name
        result.precision = precision
    timings["total"] = time.perf_counter() - t0
    return result
