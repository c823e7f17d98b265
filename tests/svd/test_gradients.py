"""σ gradients against an independent computation: ∂L/∂σᵢ = uᵢᵀ (∂L/∂W) vᵢ with ∂L/∂W from the merged model."""
import copy

import pytest
import torch

PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "a chest xray of covid lungs."]

from medclipsvd.svd import adapt, adapted_modules, merge, set_mode, sigma_parameters
from medclipsvd.svd.adapt import _get



def _loss(bb, images, labels):
    return torch.nn.functional.cross_entropy(bb(images, bb.tokenize(PROMPTS)), labels)


def _merged_weight(model, info):
    """The merged weight parameter holding the target's rows, and the row slice."""
    module = _get(model, info.slot.rsplit(".", 1)[0]) if info.slot.endswith(".in_proj") else _get(model, info.slot)
    if info.slot.endswith(".in_proj"):  # nn.MultiheadAttention after merge
        weight = module.in_proj_weight
    else:
        weight = module.weight
    rows = info.shape[0]
    index = "qkv".index(info.part) if info.part else 0
    return weight, slice(index * rows, (index + 1) * rows)


@pytest.mark.parametrize("mode", ["factorised", "rebuilt", "auto"])
def test_sigma_gradients_match_weight_gradients(tiny, batch, svd_cache, mode):
    adapt(tiny, "paper", cache_dir=svd_cache)
    set_mode(tiny, mode)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move away from σ₀ so the check is not at a special point
        for p in sigma_parameters(tiny).values():
            p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    labels = torch.tensor([0, 2])
    _loss(tiny, batch, labels).backward()
    ours = {n: p.grad.clone() for n, p in sigma_parameters(tiny).items()}
    infos = adapted_modules(tiny)
    factors = {}
    for name, info in infos.items():
        svd = _get(tiny.model, info.slot)
        U, _, Vh = svd.factors(info.part)
        factors[name] = (U.detach().double(), Vh.detach().double())

    independent = copy.deepcopy(tiny)
    merge(independent)
    weights = {n: _merged_weight(independent.model, info) for n, info in infos.items()}
    for w, _ in weights.values():
        w.requires_grad_(True)
    _loss(independent, batch, labels).backward()

    for name in infos:
        w, rows = weights[name]
        U, Vh = factors[name]
        expected = torch.einsum("or,oi,ri->r", U, w.grad[rows].double(), Vh)
        torch.testing.assert_close(ours[name].double(), expected, rtol=2e-3, atol=1e-6, msg=name)
    assert any(g.abs().max() > 0 for g in ours.values())
