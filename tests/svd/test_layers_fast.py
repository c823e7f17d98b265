"""σ layers on small hand-made matrices (milliseconds each; mutation testing of svd/layers.py runs these).

Every expected value is computed here with plain torch: the adapted weight is U·diag(σ)·Vh from
torch.linalg.svd of the weight, the attention reference is nn.MultiheadAttention itself, the σ gradient is
autograd through that hand-built weight."""
import pytest
import torch
from torch import nn

from medclipsvd.svd.decompose import Factors
from medclipsvd.svd.layers import SVDLinear, SVDSelfAttention

OUT, IN = 6, 5


def _factors(w: torch.Tensor) -> Factors:
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    return Factors(U.contiguous(), S.contiguous(), Vh.contiguous())


def _weight(rows=3 * OUT, seed=0, dtype=torch.float64):
    return torch.randn(rows, IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _qkv_layer(adapted=("q", "v"), bias=True, dtype=torch.float64, mode="auto"):
    """A fused q/k/v projection with some blocks adapted; its σ moved off σ₀ so that a layer computing with
    σ₀, or with the frozen copy, gives other outputs."""
    w = _weight(dtype=dtype)
    b = torch.randn(3 * OUT, dtype=dtype) if bias else None
    parts = {p: _factors(w[i * OUT:(i + 1) * OUT]) if p in adapted else None for i, p in enumerate("qkv")}
    layer = SVDLinear(w, b, parts, mode=mode)
    with torch.no_grad():
        for i, p in enumerate(adapted):
            layer.sigma_of(p).mul_(torch.linspace(0.5, 1.5, layer.sigma_of(p).numel(), dtype=dtype) + i)
    return layer, w, b


def _expected_weight(layer: SVDLinear, w: torch.Tensor) -> torch.Tensor:
    """The merged weight by hand: each adapted block is U·diag(σ)·Vh of its own SVD, the others unchanged."""
    blocks = []
    for i, p in enumerate("qkv"):
        block = w[i * OUT:(i + 1) * OUT]
        if p in layer.adapted_parts:
            U, _, Vh = torch.linalg.svd(block, full_matrices=False)
            block = U @ torch.diag(layer.sigma_of(p).detach()) @ Vh
        blocks.append(block)
    return torch.cat(blocks)


# --- SVDLinear ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["auto", "factorised", "rebuilt"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_forward_is_the_merged_weights_linear_map(mode, bias, grad):
    layer, w, b = _qkv_layer(bias=bias, mode=mode)
    x = torch.randn(4, 7, IN, dtype=torch.float64)
    expected = x @ _expected_weight(layer, w).T + (0 if b is None else b)
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["factorised", "rebuilt"])
def test_whole_linear_forward_and_weight(mode):
    w = _weight(rows=OUT)
    layer = SVDLinear(w, None, {"": _factors(w)}, mode=mode)
    with torch.no_grad():
        layer.sigma_of().mul_(2.0)
    x = torch.randn(3, IN, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ (2 * w).T)
    torch.testing.assert_close(layer.weight, 2 * w)
    torch.testing.assert_close(layer.effective_weight(), 2 * w)
    assert layer.bias is None
    # a whole Linear's tensors carry no part suffix, and the accessors default to that one part
    assert set(layer.state_dict()) == {"U", "Vh", "sigma0", "sigma"}  # a None bias is no entry
    U, S, Vh = layer.factors()
    assert U is layer.U and S is layer.sigma and Vh is layer.Vh and layer.sigma_of() is layer.sigma
    torch.testing.assert_close(layer.sigma0_of(), layer.sigma.detach() / 2, rtol=0, atol=0)
    torch.testing.assert_close(layer.part_weight(), 2 * w)


def test_weight_property_is_the_row_stack_of_the_blocks():
    layer, w, _ = _qkv_layer()
    expected = _expected_weight(layer, w)
    torch.testing.assert_close(layer.weight, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.part_weight("k"), w[OUT:2 * OUT], rtol=0, atol=0)  # the frozen copy
    torch.testing.assert_close(layer.part_weight("v"), expected[2 * OUT:], rtol=1e-12, atol=1e-12)


def test_only_sigma_is_trainable_and_its_gradient_is_that_of_the_merged_weight():
    layer, w, b = _qkv_layer()
    assert [n for n, p in layer.named_parameters()] == ["sigma_q", "sigma_v"]
    assert set(layer.state_dict()) == {"U_q", "Vh_q", "sigma0_q", "sigma_q", "frozen_k", "U_v", "Vh_v", "sigma0_v",
                                       "sigma_v", "bias"}
    x = torch.randn(3, 4, IN, dtype=torch.float64)
    target = torch.randn(3, 4, 3 * OUT, dtype=torch.float64)
    for mode in ("factorised", "rebuilt"):
        layer.zero_grad()
        layer.mode = mode
        ((layer(x) - target) ** 2).sum().backward()
        # reference: autograd through U·diag(σ)·Vh built here from each block's own SVD
        sigmas = {p: layer.sigma_of(p).detach().clone().requires_grad_(True) for p in ("q", "v")}
        blocks = []
        for i, p in enumerate("qkv"):
            block = w[i * OUT:(i + 1) * OUT]
            if p in sigmas:
                U, _, Vh = torch.linalg.svd(block, full_matrices=False)
                block = U @ torch.diag(sigmas[p]) @ Vh
            blocks.append(block)
        ((x @ torch.cat(blocks).T + b - target) ** 2).sum().backward()
        for p in ("q", "v"):
            torch.testing.assert_close(layer.sigma_of(p).grad, sigmas[p].grad, rtol=1e-9, atol=1e-9)
        for name, buf in layer.named_buffers():
            assert not buf.requires_grad, name


def test_sigma0_is_kept_and_sigma_starts_at_it():
    w = _weight()
    f = _factors(w[:OUT])
    layer = SVDLinear(w, None, {"q": f, "k": None, "v": None})
    torch.testing.assert_close(layer.sigma_of("q").detach(), f.S, rtol=0, atol=0)
    with torch.no_grad():
        layer.sigma_of("q").add_(1.0)
    torch.testing.assert_close(layer.sigma0_of("q"), f.S, rtol=0, atol=0)  # a copy: training leaves it
    U, S, Vh = layer.factors("q")
    assert U is layer.U_q and Vh is layer.Vh_q and S is layer.sigma_q
    assert layer.adapted_parts == ["q"] and layer.part_names == ["q", "k", "v"]
    assert (layer.out_features, layer.in_features) == (3 * OUT, IN)


def test_frozen_blocks_and_bias_are_copies():
    w = _weight()
    b = torch.randn(3 * OUT, dtype=torch.float64)
    layer = SVDLinear(w, b, {"q": None, "k": None, "v": None})
    w_before, b_before = w.clone(), b.clone()
    w.zero_()
    b.zero_()
    torch.testing.assert_close(layer.effective_weight(), w_before, rtol=0, atol=0)
    torch.testing.assert_close(layer.bias, b_before, rtol=0, atol=0)


def test_rows_that_do_not_split_into_equal_parts_are_refused():
    with pytest.raises(ValueError, match=r"^cannot split 7 rows into 3 equal parts$"):
        SVDLinear(torch.zeros(7, IN), None, {"q": None, "k": None, "v": None})


def _flops(layer: SVDLinear, n: int, grad: bool) -> tuple[int, int]:
    """(rebuilt, factorised) FLOPs of a call with n token rows, from the module docstring's counts: per adapted
    block of o rows, rebuilding costs 2·o·r·in (r = min(o, in)) and the rebuilt map 3·N·in·out over all rows
    (forward, ∂x, ∂W); the factorised form costs 2·N·r·(in+o) per adapted block and 2·N·in·o per frozen block.
    Without gradients each term is one pass: o·r·in, N·in·out, N·r·(in+o), N·in·o."""
    blocks = len(layer.part_names)
    o, i = layer.out_features // blocks, layer.in_features
    r = min(o, i)
    adapted = len(layer.adapted_parts)
    passes = 2 if grad else 1
    rebuilt = passes * adapted * o * r * i + (3 if grad else 1) * n * i * o * blocks
    factorised = passes * adapted * n * r * (i + o) + passes * n * i * o * (blocks - adapted)
    return rebuilt, factorised


def _shaped(out, inp, parts):
    r = min(out, inp)
    return SVDLinear(torch.zeros(out * len(parts), inp), None,
                     {p: Factors(torch.zeros(out, r), torch.ones(r), torch.zeros(r, inp)) if a else None
                      for p, a in parts.items()})


@pytest.mark.parametrize("out, inp, parts", [
    (64, 64, {"": True}), (64, 48, {"": True}), (48, 64, {"": True}), (256, 64, {"": True}),
    (64, 64, {"q": True, "k": True, "v": True}), (64, 64, {"q": True, "k": False, "v": True}),
    (64, 64, {"q": False, "k": True, "v": False}), (40, 24, {"q": True, "k": False, "v": False}),
])
@pytest.mark.parametrize("grad", [True, False])
def test_cost_model_picks_the_cheaper_form_at_every_token_count(out, inp, parts, grad):
    layer = _shaped(out, inp, parts)
    chosen = [layer.uses_rebuilt_weight(n, grad) for n in range(1, 400)]
    cheaper = [_flops(layer, n, grad)[0] < _flops(layer, n, grad)[1] for n in range(1, 400)]
    assert chosen == cheaper
    assert len(set(chosen)) == 2 or (out, inp) == (256, 64) or not all(parts.values())  # the range crosses over


@pytest.mark.parametrize("mode, expected", [("rebuilt", True), ("factorised", False)])
def test_a_forced_mode_ignores_the_cost(mode, expected):
    layer = _shaped(64, 64, {"": True})
    layer.mode = mode
    assert [layer.uses_rebuilt_weight(n, g) for n in (1, 10 ** 6) for g in (True, False)] == [expected] * 4


def test_forward_asks_the_cost_model_with_the_token_rows_and_whether_sigma_needs_gradients():
    layer, w, _ = _qkv_layer()
    calls = []
    layer.uses_rebuilt_weight = lambda n, grad: calls.append((n, grad)) or False
    x = torch.randn(4, 7, IN, dtype=torch.float64)
    layer(x)
    with torch.no_grad():
        layer(x[0])
    layer.sigma_of("q").requires_grad_(False)
    layer(x)
    layer.sigma_of("v").requires_grad_(False)
    layer(x)  # no σ needs a gradient: the no-grad counts apply
    assert calls == [(28, True), (7, False), (28, True), (28, False)]
    assert all(type(n) is int for n, _ in calls)


def test_forward_rebuilds_only_when_the_cost_model_says_so():
    layer, w, _ = _qkv_layer()
    used = []
    original = layer.effective_weight
    layer.effective_weight = lambda: used.append(1) or original()
    x = torch.randn(2, IN, dtype=torch.float64)
    for rebuilt in (False, True):
        layer.uses_rebuilt_weight = lambda n, grad, r=rebuilt: r
        layer(x)
    assert used == [1]


@pytest.mark.parametrize("bias", [True, False])
def test_merge_gives_a_frozen_linear_with_the_weight_computed_in_float64(bias):
    layer, w, b = _qkv_layer(bias=bias, dtype=torch.float32)
    merged = layer.merge()
    assert type(merged) is nn.Linear and (merged.in_features, merged.out_features) == (IN, 3 * OUT)
    assert merged.weight.dtype == torch.float32 and not any(p.requires_grad for p in merged.parameters())
    blocks = []
    for i, p in enumerate("qkv"):
        if p in layer.adapted_parts:
            U, S, Vh = (t.double() for t in layer.factors(p))
            blocks.append(U @ torch.diag(S) @ Vh)
        else:
            blocks.append(w[i * OUT:(i + 1) * OUT].double())
    torch.testing.assert_close(merged.weight, torch.cat(blocks).float(), rtol=0, atol=0)
    if bias:
        torch.testing.assert_close(merged.bias, b, rtol=0, atol=0)
    else:
        assert merged.bias is None
    x = torch.randn(3, IN)
    torch.testing.assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-5)


def test_merge_of_a_layer_without_frozen_blocks_or_bias():
    w = _weight(rows=OUT)
    layer = SVDLinear(w, None, {"": _factors(w)})
    merged = layer.merge()
    torch.testing.assert_close(merged.weight, w, rtol=1e-12, atol=1e-12)
    assert merged.weight.dtype == torch.float64 and merged.bias is None


def test_extra_repr_names_the_adapted_blocks():
    layer, _, _ = _qkv_layer()
    assert layer.extra_repr() == f"in={IN}, out={3 * OUT}, adapted=[q, v], mode=auto"
    w = _weight(rows=OUT)
    assert SVDLinear(w, None, {"": _factors(w)}, mode="rebuilt").extra_repr() == \
        f"in={IN}, out={OUT}, adapted=[weight], mode=rebuilt"


# --- SVDSelfAttention -------------------------------------------------------------------------------
D, H = 8, 2


def _attention(batch_first: bool, bias: bool = True, dropout: float = 0.0, adapt_out: bool = True, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mha = nn.MultiheadAttention(D, H, dropout=dropout, bias=bias, batch_first=batch_first)
    mha.eval()
    w, b = mha.in_proj_weight.detach(), (mha.in_proj_bias.detach() if bias else None)
    in_proj = SVDLinear(w, b, {p: _factors(w[i * D:(i + 1) * D].double()) for i, p in enumerate("qkv")})
    in_proj = in_proj.float()
    ow, ob = mha.out_proj.weight.detach(), (mha.out_proj.bias.detach() if bias else None)
    out_proj = SVDLinear(ow, ob, {"": _factors(ow.double())}).float() if adapt_out else mha.out_proj
    return mha, SVDSelfAttention(mha, in_proj, out_proj).eval()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_attention_equals_multihead_attention(batch_first, bias):
    mha, attn = _attention(batch_first, bias)
    assert (attn.embed_dim, attn.num_heads, attn.head_dim, attn.batch_first) == (D, H, D // H, batch_first)
    x = torch.randn(3, 5, D)
    out, weights = attn(x, x, x)
    assert weights is None
    torch.testing.assert_close(out, mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    out, _ = attn(x)  # key and value default to the query
    torch.testing.assert_close(out, mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_masks_mean_what_they_mean_to_multihead_attention(batch_first):
    mha, attn = _attention(batch_first)
    x = torch.randn(5, 5, D) if batch_first else torch.randn(5, 3, D)
    L = 5
    causal = torch.ones(L, L, dtype=torch.bool).triu(1)
    additive = torch.randn(L, L, dtype=torch.float64)  # another dtype: cast to the query's
    for mask in (causal, additive):
        ref = mha(x, x, x, need_weights=False, attn_mask=mask.float() if mask.is_floating_point() else mask)[0]
        torch.testing.assert_close(attn(x, x, x, attn_mask=mask)[0], ref, rtol=1e-5, atol=1e-5)
    ref = mha(x, x, x, need_weights=False, attn_mask=causal)[0]
    torch.testing.assert_close(attn(x, x, x, is_causal=True)[0], ref, rtol=1e-5, atol=1e-5)
    # a mask given with is_causal: the mask alone applies (SDPA refuses both at once)
    torch.testing.assert_close(attn(x, x, x, attn_mask=additive, is_causal=True)[0],
                               mha(x, x, x, need_weights=False, attn_mask=additive.float())[0], rtol=1e-5, atol=1e-5)


def test_attention_dropout_only_while_training():
    mha, attn = _attention(True, dropout=0.5)
    assert attn.dropout == 0.5
    x = torch.randn(2, 6, D)
    torch.testing.assert_close(attn(x)[0], mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)
    attn.train()
    torch.manual_seed(0)
    assert not torch.allclose(attn(x)[0], mha(x, x, x, need_weights=False)[0], atol=1e-3)


@pytest.mark.parametrize("call, message", [
    (lambda a, x: a(x, x.clone(), x), "SVDSelfAttention supports self-attention only"),
    (lambda a, x: a(x, x, x.clone()), "SVDSelfAttention supports self-attention only"),
    (lambda a, x: a(x, x, x, need_weights=True),
     "SVDSelfAttention returns no attention weights and takes no padding mask"),
    (lambda a, x: a(x, key_padding_mask=torch.zeros(2, 3, dtype=torch.bool)),
     "SVDSelfAttention returns no attention weights and takes no padding mask"),
])
def test_attention_refuses_what_it_does_not_compute(call, message):
    _, attn = _attention(True)
    with pytest.raises(NotImplementedError) as info:
        call(attn, torch.randn(2, 3, D))
    assert str(info.value) == message


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("adapt_out", [True, False])
def test_attention_merges_to_an_equal_multihead_attention(batch_first, bias, adapt_out):
    mha, attn = _attention(batch_first, bias, dropout=0.25, adapt_out=adapt_out)
    with torch.no_grad():
        attn.in_proj.sigma_of("k").mul_(1.5)
        if adapt_out:
            attn.out_proj.sigma_of().mul_(0.5)
    merged = attn.merge().eval()
    assert type(merged) is nn.MultiheadAttention
    assert (merged.embed_dim, merged.num_heads, merged.dropout, merged.batch_first) == (D, H, 0.25, batch_first)
    assert (merged.in_proj_bias is not None) is bias and (merged.out_proj.bias is not None) is bias
    assert not any(p.requires_grad for p in merged.parameters())
    torch.testing.assert_close(merged.in_proj_weight, attn.in_proj.effective_weight(), rtol=1e-6, atol=1e-6)
    out_w = attn.out_proj.effective_weight() if adapt_out else mha.out_proj.weight
    torch.testing.assert_close(merged.out_proj.weight, out_w, rtol=1e-6, atol=1e-6)
    if bias:
        torch.testing.assert_close(merged.in_proj_bias, mha.in_proj_bias, rtol=0, atol=0)
        torch.testing.assert_close(merged.out_proj.bias, mha.out_proj.bias, rtol=0, atol=0)
    x = torch.randn(3, 4, D)
    torch.testing.assert_close(merged(x, x, x, need_weights=False)[0], attn(x)[0], rtol=1e-5, atol=1e-5)
