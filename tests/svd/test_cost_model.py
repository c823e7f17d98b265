"""The cheaper exact computation is chosen from the matrix shape and the tokens in the call."""
import pytest
import torch

from medclipsvd.svd import SVDLinear, svd_factors
from medclipsvd.svd.decompose import Factors


def _layer(out, inp, parts=("",)):
    w = torch.randn(out * len(parts), inp, dtype=torch.float64)
    rows = out
    factors = {p: svd_factors(w[i * rows:(i + 1) * rows]) for i, p in enumerate(parts)}
    return SVDLinear(w, torch.randn(out * len(parts), dtype=torch.float64), factors), w


def _shaped_layer(out, inp):
    """The choice depends on shapes only: stand-in factors of the right shapes, no SVD needed."""
    r = min(out, inp)
    factors = Factors(torch.zeros(out, r), torch.ones(r), torch.zeros(r, inp))
    return SVDLinear(torch.zeros(out, inp), None, {"": factors})


@pytest.mark.parametrize("out, inp, tokens, grad, rebuilt", [
    (768, 768, 32 * 197, True, True),      # ViT-B/16 image batch: d×d rebuilds (N > 2d)
    (768, 768, 1000, True, False),         # below 2d tokens: factorised
    (768, 768, 1700, True, True),          # above 2d tokens
    (3072, 768, 32 * 197, True, False),    # 4d×d MLP: factorised always wins
    (768, 3072, 10 ** 6, True, False),
    (512, 512, 10 * 12, True, False),      # short prompt batch
    (768, 768, 800, False, True),          # no grad: rebuilt once N > d
    (768, 768, 700, False, False),
])
def test_choice_follows_the_flop_count(out, inp, tokens, grad, rebuilt):
    layer = _shaped_layer(out, inp)
    assert layer.uses_rebuilt_weight(tokens, grad) is rebuilt


@pytest.mark.parametrize("parts", [("",), ("q", "k", "v")])
@pytest.mark.parametrize("mode", ["factorised", "rebuilt"])
def test_both_forms_compute_the_same_map(parts, mode):
    layer, w = _layer(24, 16, parts)
    layer.mode = mode
    x = torch.randn(5, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ w.T + layer.bias)
