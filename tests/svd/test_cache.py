import torch

from medclipsvd.backbones import load_backbone
from medclipsvd.svd import SVDCache, adapt, adapt_state


def test_second_adaptation_reads_every_decomposition_from_the_cache(svd_cache):
    first = adapt(load_backbone("tiny-clip"), "paper", cache_dir=svd_cache)
    assert adapt_state(first).cache_misses == 72 and adapt_state(first).cache_hits == 0
    second = adapt(load_backbone("tiny-clip"), "attention", cache_dir=svd_cache)
    assert adapt_state(second).cache_misses == 0 and adapt_state(second).cache_hits == 48


def test_damaged_cache_entries_are_recomputed(svd_cache):
    cache = SVDCache(svd_cache)
    w = torch.randn(8, 6)
    good = cache.get(w)
    for entry in svd_cache.rglob("*.safetensors"):
        entry.write_bytes(b"broken")
    again = SVDCache(svd_cache).get(w)
    torch.testing.assert_close(again.S, good.S)


def test_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path))
    adapt(load_backbone("tiny-clip"), "mlp", cache_dir=False)
    assert not any(tmp_path.rglob("*.safetensors"))


def test_factors_are_stored_in_the_weight_dtype_from_a_float64_svd():
    w = torch.randn(16, 12)
    f = SVDCache(False).get(w)
    assert f.U.dtype == f.S.dtype == f.Vh.dtype == torch.float32
    assert torch.all(f.S[:-1] >= f.S[1:])
    torch.testing.assert_close((f.U * f.S) @ f.Vh, w, atol=1e-5, rtol=1e-5)
