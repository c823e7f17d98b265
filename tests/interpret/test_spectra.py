"""Weight-only views: relative σ change per matrix and per-head W_O^h·W_V^h spectra."""
from types import SimpleNamespace

import math
import pytest
import torch

from medclipsvd.interpret.spectra import (AttentionWeights, extreme_directions, head_changes,
                                          head_spectra, heatmap_grid, matrix_changes)


def _info(tower, layer, matrix, s0):
    return SimpleNamespace(tower=tower, layer=layer, matrix=matrix, sigma0=s0)


def test_matrix_changes_rank_and_directions():
    s0 = torch.linspace(4.0, 1.0, 8)
    infos = {
        "a": _info("vision", 0, "q", s0.clone()),
        "b": _info("vision", 1, "v", s0.clone()),
        "c": _info("text", 0, "fc1", s0.clone()),
    }
    sig = {"a": s0.clone(), "b": s0.clone(), "c": s0.clone()}
    sig["b"][2] *= 2.0        # amplified direction 2 of b
    sig["b"][7] *= 0.25       # suppressed direction 7 of b
    sig["c"][0] *= 1.1
    ch = matrix_changes(infos, sig, top=3)
    assert [c.target for c in matrix_changes(infos, sig, {k: s0 for k in infos})] == ["b", "c", "a"]
    assert [c.target for c in ch] == ["b", "c", "a"]
    expected = float((sig["b"] - s0).norm() / s0.norm())
    assert ch[0].rel_change == pytest.approx(expected)
    assert ch[2].rel_change == 0.0
    assert [d.index for d in ch[0].amplified] == [2]
    assert [d.index for d in ch[0].suppressed] == [7]
    amp, sup = extreme_directions(ch, top=2)
    assert (amp[0].target, amp[0].index) == ("b", 2)
    assert amp[0].ratio == pytest.approx(2.0)
    assert amp[0].rel_delta == pytest.approx(float(s0[2] / s0.norm()))
    assert (amp[1].target, amp[1].index) == ("c", 0)
    assert (sup[0].target, sup[0].index) == ("b", 7)
    layers, kinds, grid = heatmap_grid(ch, "vision", num_layers=3)
    assert kinds == ["q", "v"] and layers == [0, 1, 2]
    assert grid[1, 1] == pytest.approx(expected) and grid[0, 0] == 0.0
    assert torch.isnan(grid[2]).all() and torch.isnan(grid[0, 1])


def _random_attn(d=24, heads=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) / d ** 0.5
    return AttentionWeights(q=r(d, d), k=r(d, d), v=r(d, d), o=r(d, d), num_heads=heads)


def test_head_spectra_match_direct_svd():
    w = _random_attn()
    ov, qk = head_spectra(w)
    hd = w.head_dim
    for h in range(w.num_heads):
        sl = slice(h * hd, (h + 1) * hd)
        direct_ov = torch.linalg.svdvals((w.o[:, sl] @ w.v[sl]).double())[:hd]
        direct_qk = torch.linalg.svdvals((w.q[sl].T @ w.k[sl]).double())[:hd]
        torch.testing.assert_close(ov[h], direct_ov, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(qk[h], direct_qk, rtol=1e-6, atol=1e-9)


def test_head_changes_rank_perturbed_heads_first():
    before = {("vision", i): _random_attn(seed=i) for i in range(3)}
    after = {k: AttentionWeights(**{**w.__dict__}) for k, w in before.items()}
    hd = before[("vision", 0)].head_dim
    # layer 2 head 1: value rows scaled by 3 (OV spectrum x3); layer 0 head 2: output columns x1.5
    v = after[("vision", 2)].v.clone(); v[hd:2 * hd] *= 3.0
    after[("vision", 2)] = AttentionWeights(**{**after[("vision", 2)].__dict__, "v": v})
    o = after[("vision", 0)].o.clone(); o[:, 2 * hd:] *= 1.5
    after[("vision", 0)] = AttentionWeights(**{**after[("vision", 0)].__dict__, "o": o})
    ranked = head_changes(before, after)
    assert [(c.layer, c.head) for c in ranked[:2]] == [(2, 1), (0, 2)]
    assert ranked[0].ov_change == pytest.approx(2.0, rel=1e-5)
    assert ranked[1].ov_change == pytest.approx(0.5, rel=1e-5)
    assert all(c.ov_change < 1e-6 for c in ranked[2:])
