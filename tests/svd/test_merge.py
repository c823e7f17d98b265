import pytest
import torch

PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "a chest xray of covid lungs."]

from medclipsvd.svd import SVDLinear, SVDSelfAttention, adapt, merge, sigma_parameters



def test_merge_is_exact_and_leaves_plain_modules(tiny, batch, svd_cache):
    base_params = sum(p.numel() for p in tiny.parameters())
    base_types = sorted({type(m).__name__ for m in tiny.modules()})
    adapt(tiny, "paper", cache_dir=svd_cache)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in sigma_parameters(tiny).values():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen))
        tokens = tiny.tokenize(PROMPTS)
        adapted = tiny(batch, tokens).double()
        merge(tiny)
        merged = tiny(batch, tokens).double()
    assert ((merged - adapted).abs().max() / adapted.abs().max()) < 1e-5
    assert not any(isinstance(m, (SVDLinear, SVDSelfAttention)) for m in tiny.modules())
    assert sorted({type(m).__name__ for m in tiny.modules()}) == base_types
    assert sum(p.numel() for p in tiny.parameters()) == base_params


def test_merged_backbone_cannot_be_merged_twice(tiny, svd_cache):
    adapt(tiny, "paper", cache_dir=svd_cache)
    merge(tiny)
    from medclipsvd.errors import AdapterError

    with pytest.raises(AdapterError, match="not adapted"):
        merge(tiny)


def test_adapting_twice_is_refused(tiny, svd_cache):
    from medclipsvd.errors import AdapterError

    adapt(tiny, "paper", cache_dir=svd_cache)
    with pytest.raises(AdapterError, match="already adapted"):
        adapt(tiny, "paper", cache_dir=svd_cache)
