"""Safety: a well-formed but altered SVD cache entry must not change the model (issue 10, item 5)."""
import pytest
import torch

from medclipsvd.backbones import load_backbone
from medclipsvd.svd import SVDCache, adapt, adapt_state

PROMPTS = ["a photo of a benign tumor.", "a photo of a malignant tumor."]


def _entries(root):
    return sorted(root.rglob("*.safetensors"))


def _rewrite(path, change, recompute_checksum: bool):
    """Alter an entry and write it back well-formed (valid safetensors, metadata kept or recomputed)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        t = {k: fh.get_tensor(k) for k in ("U", "S", "Vh")}
    change(t)
    if recompute_checksum:  # an attacker who knows the format: only the probe can catch this
        from medclipsvd.svd.decompose import factors_checksum

        meta["checksum"] = factors_checksum(t["U"], t["S"], t["Vh"])
    save_file(t, str(path), metadata=meta)


def _logits(bb, batch):
    with torch.no_grad():
        return bb(batch, bb.tokenize(PROMPTS))


@pytest.mark.parametrize("recompute_checksum", [False, True])
def test_altered_cache_entry_is_detected_and_recomputed(svd_cache, batch, capsys, recompute_checksum):
    base = _logits(load_backbone("tiny-clip"), batch)
    adapt(load_backbone("tiny-clip"), "paper", cache_dir=svd_cache)
    for path in _entries(svd_cache):
        _rewrite(path, lambda t: t["S"].mul_(1.5), recompute_checksum)
    capsys.readouterr()
    bb = adapt(load_backbone("tiny-clip"), "paper", cache_dir=svd_cache)
    state = adapt_state(bb)
    assert state.cache_hits == 0 and state.cache_misses == 72  # every altered entry recomputed
    torch.testing.assert_close(_logits(bb, batch), base, atol=1e-4, rtol=0)
    err = capsys.readouterr().err
    assert err.count("did not verify") == 1, err  # said once, not once per entry
    again = adapt(load_backbone("tiny-clip"), "paper", cache_dir=svd_cache)  # rewritten entries verify
    assert adapt_state(again).cache_hits == 72


def test_entry_copied_under_another_matrix_name_is_refused(svd_cache):
    from medclipsvd.svd.decompose import probe_error

    cache = SVDCache(svd_cache)
    a, b = torch.randn(8, 6), torch.randn(8, 6)
    cache.get(a)
    cache.get(b)
    pa, pb = _entries(svd_cache)
    pb.write_bytes(pa.read_bytes())  # a valid entry, checksum intact, but for the other matrix
    fresh = SVDCache(svd_cache)
    for w in (a, b):
        f = fresh.get(w)
        assert probe_error(w, f) < 1e-5
    assert fresh.rejected == 1 and fresh.hits == 1


def test_entries_record_format_weight_and_checksum(svd_cache):
    from safetensors import safe_open

    from medclipsvd.svd.decompose import CACHE_FORMAT

    w = torch.randn(12, 5)
    SVDCache(svd_cache).get(w)
    (path,) = _entries(svd_cache)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == CACHE_FORMAT and meta["weight"] == path.stem and len(meta["checksum"]) == 96


def test_full_cache_disk_costs_time_only_and_leaves_no_temp_files(svd_cache, monkeypatch):
    import errno

    from medclipsvd.io import atomic

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_os_write", full)
    f = SVDCache(svd_cache).get(torch.randn(6, 4))
    assert f.S.shape == (4,)
    assert not [p for p in svd_cache.rglob("*") if p.is_file()]
