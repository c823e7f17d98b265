"""TextSpan on constructed data: head outputs are built from known text directions, so the greedy
decomposition must return exactly those descriptions, strongest first."""
import pytest
import torch

from medclipsvd.interpret.errors import InterpretError
from medclipsvd.interpret.textspan import textspan


def _pool(m: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(m, d, generator=g)
    return t / t.norm(dim=1, keepdim=True)


def _planted(pool, planted, stds, n, noise, seed, correlate=0.0):
    """Contributions = sum_k a_k(image) * text_k (+ noise). The coefficient columns are centred and
    made orthogonal with sample std exactly std_k, so the planted order is the true order."""
    g = torch.Generator().manual_seed(seed)
    d = pool.shape[1]
    directions = pool[planted].clone()
    raw = torch.randn(n, len(planted), generator=g)
    q, _ = torch.linalg.qr(raw - raw.mean(0))
    coeff = q * (n ** 0.5) * torch.tensor(stds)
    data = coeff @ directions + noise * torch.randn(n, d, generator=g)
    return data + 3.0 * torch.randn(d, generator=g)  # a constant offset TextSpan must ignore


CASES = [
    # (pool size, dim, planted rows, their std-devs, images, noise)
    (200, 64, [17, 3, 150], [4.0, 2.5, 1.5], 256, 0.05),
    (300, 32, [0, 299, 42, 7], [5.0, 3.0, 2.0, 1.2], 128, 0.05),
    (120, 48, [90, 91], [2.0, 1.9], 400, 0.02),   # close variances: order still recovered
]


@pytest.mark.parametrize("m,d,planted,stds,n,noise", CASES)
def test_recovers_planted_descriptions_in_order(m, d, planted, stds, n, noise):
    pool = _pool(m, d, seed=m + d)
    # Make the planted directions exactly orthogonal so the planted variances define the order.
    q, _ = torch.linalg.qr(pool[planted].T)
    pool[planted] = q.T
    data = _planted(pool, planted, stds, n, noise, seed=1)
    texts = [f"description {i}" for i in range(m)]
    res = textspan(data, pool, texts, n_select=len(planted))
    assert [c.index for c in res.choices] == planted
    assert res.texts == [f"description {i}" for i in planted]
    # Explained variance fractions decrease and together cover nearly all the variance.
    fractions = [c.fraction for c in res.choices]
    assert fractions == sorted(fractions, reverse=True)
    assert res.explained > 0.95


def test_correlated_planted_texts_are_not_picked_twice():
    """Near-duplicate descriptions of the strongest direction must lose to the second planted one
    once the first direction has been removed."""
    m, d = 150, 64
    pool = _pool(m, d, seed=5)
    dup = pool[10] * 0.95 + 0.05 * pool[11]
    pool[12] = dup / dup.norm()           # a near-copy of description 10
    data = _planted(pool, [10, 40], [4.0, 2.0], 300, 0.05, seed=2)
    res = textspan(data, pool, n_select=2)
    assert [c.index for c in res.choices] == [10, 40]


def test_description_outside_the_span_is_never_chosen():
    m, d = 60, 32
    pool = _pool(m, d, seed=9)
    data = _planted(pool, [4], [3.0], 200, 0.0, seed=3)
    # A description orthogonal to everything the head writes scores zero.
    res = textspan(data, pool, n_select=1)
    assert res.choices[0].index == 4
    assert res.choices[0].fraction == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("contrib,texts,match", [
    (torch.zeros(5, 8), torch.zeros(3, 9), "dimension 8 but text embeddings 9"),
    (torch.zeros(1, 8), torch.zeros(3, 8), "at least 2 images"),
    (torch.zeros(5, 8), torch.zeros(0, 8), "empty"),
    (torch.zeros(5), torch.zeros(3, 8), "2-D inputs"),
])
def test_bad_inputs_raise_clear_errors(contrib, texts, match):
    with pytest.raises(InterpretError, match=match):
        textspan(contrib, texts)


@pytest.mark.parametrize("center", [False, True])
def test_planted_order_holds_with_and_without_text_centring(center):
    m, d, planted = 200, 64, [17, 3, 150]
    pool = _pool(m, d, seed=4)
    q, _ = torch.linalg.qr(pool[planted].T)
    pool[planted] = q.T
    data = _planted(pool, planted, [4.0, 2.5, 1.5], 256, 0.05, seed=1)
    res = textspan(data, pool, n_select=3, center_texts=center)
    assert [c.index for c in res.choices] == planted
