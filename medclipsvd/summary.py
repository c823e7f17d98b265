"""Parameter accounting and the equivalence check at initialisation (`medclipsvd summary`)."""
from __future__ import annotations

import torch

from medclipsvd.backbones import load_backbone
from medclipsvd.svd import adapt, adapt_state, adapted_modules

PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "a chest xray of covid lungs.",
           "a photo of a benign tumor."]


def summarize(name: str, *, random_init: bool = False, weights: str | None = None, text_dir: str | None = None,
              preset: str = "paper", cache_dir=None, seed: int = 0) -> dict:
    bb = load_backbone(name, random_init=random_init, weights=weights, text_dir=text_dir)
    counts = bb.parameter_counts()
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, bb.image_size, bb.image_size, generator=gen)
    tokens = bb.tokenize(PROMPTS)
    with torch.no_grad():
        before = bb(images, tokens).double()
    adapt(bb, preset, cache_dir=cache_dir, progress=True)
    with torch.no_grad():
        after = bb(images, tokens).double()
    per_tower = {"vision": 0, "text": 0}
    for info in adapted_modules(bb).values():
        per_tower[info.tower] += min(info.shape)
    trainable = sum(p.numel() for p in bb.parameters() if p.requires_grad)
    assert trainable == sum(per_tower.values())
    diff = (after - before).abs().max().item()
    state = adapt_state(bb)
    return {
        "backbone": name,
        "family": bb.family,
        "weights": bb.source,
        "preset": preset,
        "total_params": counts["total"],
        "trainable_params": trainable,
        "trainable_percent": 100.0 * trainable / counts["total"],
        "towers": {t: {"params": counts[t], "trainable": per_tower[t]} for t in ("vision", "text")},
        "adapted_matrices": len(state.targets),
        "max_abs_logit_diff": diff,
        "max_rel_logit_diff": diff / before.abs().max().item(),
        "logit_scale": float(bb.logit_scale),
        "logit_bias": float(bb.logit_bias),
        "svd_cache_hits": state.cache_hits,
        "svd_cache_misses": state.cache_misses,
    }


__all__ = ["summarize"]
