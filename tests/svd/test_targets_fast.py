"""Targeting (svd/targets.py) and adaptation (svd/adapt.py) on a width-8 two-tower toy with the real block
patterns (timm fused q/k/v, open_clip nn.MultiheadAttention, separate q/k/v Linears): milliseconds per test,
so mutation testing of these modules runs them. Expected names and shapes are written out by hand; expected
weights and singular values come from the plain modules and torch.linalg.svd."""
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from svd_toy_backbone import HIDDEN, WIDTH, ToySVDBackbone, inputs, sliced_weights  # noqa: E402

from medclipsvd.errors import AdapterError, TargetError  # noqa: E402
from medclipsvd.svd.adapt import (_plain_linear, adapt, adapt_state, adapted_modules,  # noqa: E402
                                  effective_weights, initial_sigmas,
                                  load_sigmas, merge, set_mode, sigma_parameters, trainable_count)
from medclipsvd.svd.layers import SVDLinear, SVDSelfAttention  # noqa: E402
from medclipsvd.svd.targets import (BANDS, PRESETS, Candidate, TargetSpec, band_layers,  # noqa: E402
                                    candidate_shape, enumerate_candidates, resolve_spec, select_targets, sigma_total)

V = "visual.blocks"
T = "transformer.resblocks"


# --- bands, specs, presets --------------------------------------------------------------------------
@pytest.mark.parametrize("n, bottom, middle, top", [
    (12, [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]),
    (6, [0, 1], [2, 3], [4, 5]),
    (4, [0], [1, 2], [3]),          # 4/3 rounds to 1, 8/3 to 3
    (5, [0, 1], [2], [3, 4]),       # 5/3 rounds to 2, 10/3 to 3
    (2, [0], [], [1]),
    (1, [], [0], []),               # 1/3 rounds to 0, 2/3 to 1
])
def test_bands_are_rounded_thirds(n, bottom, middle, top):
    assert band_layers("bottom", n) == bottom
    assert band_layers("middle", n) == middle
    assert band_layers("top", n) == top
    assert band_layers("all", n) == list(range(n))
    assert band_layers("top_bottom", n) == sorted(bottom + top)
    assert band_layers("top_middle", n) == sorted(middle + top)
    assert band_layers("bottom_middle", n) == sorted(bottom + middle)


def test_bands_listed():
    assert BANDS == ("all", "top", "bottom", "middle", "top_bottom", "top_middle", "bottom_middle")


def test_unknown_band_names_the_choices():
    with pytest.raises(TargetError) as info:
        band_layers("upper", 12)
    assert str(info.value) == ("unknown layer band 'upper'; use one of all, top, bottom, middle, top_bottom, "
                               "top_middle, bottom_middle or a list of indices")


def test_spec_defaults_and_checks():
    spec = TargetSpec()
    assert (spec.towers, spec.layers, spec.modules) == ("both", "all", None)
    assert spec.matrices == ("q", "k", "v", "o", "fc1", "fc2")
    assert spec.tower_names() == ("vision", "text")
    assert TargetSpec(towers="text").tower_names() == ("text",)
    assert TargetSpec(matrices=("v", "q", "v")).matrices == ("v", "q")  # duplicates dropped, order kept
    with pytest.raises(ValidationError, match="matrices must name at least one of q, k, v, o, fc1, fc2"):
        TargetSpec(matrices=())
    with pytest.raises(ValidationError):
        TargetSpec(unknown=1)
    with pytest.raises(ValidationError):
        spec.towers = "text"


def test_presets():
    assert PRESETS == {
        "paper": TargetSpec(),
        "attention": TargetSpec(matrices=("q", "k", "v", "o")),
        "mlp": TargetSpec(matrices=("fc1", "fc2")),
        "vision-only": TargetSpec(towers="vision"),
        "text-only": TargetSpec(towers="text"),
    }


def test_resolve_spec():
    spec = TargetSpec(towers="vision")
    assert resolve_spec(spec) == (spec, None)
    assert resolve_spec({"matrices": ["q"]}) == (TargetSpec(matrices=("q",)), None)
    assert resolve_spec("mlp") == (PRESETS["mlp"], "mlp")
    with pytest.raises(TargetError) as info:
        resolve_spec("everything")
    assert str(info.value) == ("unknown target preset 'everything'; presets: paper, attention, mlp, vision-only, "
                               "text-only")


# --- candidates ----------------------------------------------------------------------------------
def _fused_names(i):
    return [f"{V}.{i}.attn.qkv.q", f"{V}.{i}.attn.qkv.k", f"{V}.{i}.attn.qkv.v", f"{V}.{i}.attn.proj",
            f"{V}.{i}.mlp.fc1", f"{V}.{i}.mlp.fc2"]


def _mha_names(i):
    return [f"{T}.{i}.attn.in_proj.q", f"{T}.{i}.attn.in_proj.k", f"{T}.{i}.attn.in_proj.v", f"{T}.{i}.attn.out_proj",
            f"{T}.{i}.mlp.c_fc", f"{T}.{i}.mlp.c_proj"]


def test_candidates_of_fused_and_mha_towers():
    cands = enumerate_candidates(ToySVDBackbone())
    expected = sum((_fused_names(i) for i in range(3)), []) + sum((_mha_names(i) for i in range(2)), [])
    assert [c.name for c in cands] == expected
    assert cands[0] == Candidate("vision", 0, "q", f"{V}.0.attn.qkv", "q")
    assert cands[3] == Candidate("vision", 0, "o", f"{V}.0.attn.proj", "")
    assert cands[-12] == Candidate("text", 0, "q", f"{T}.0.attn.in_proj", "q")
    assert cands[-3] == Candidate("text", 1, "o", f"{T}.1.attn.out_proj", "")
    assert [c.matrix for c in cands[:6]] == ["q", "k", "v", "o", "fc1", "fc2"]
    assert [c.layer for c in cands] == [0] * 6 + [1] * 6 + [2] * 6 + [0] * 6 + [1] * 6


def test_candidates_of_a_separate_qkv_tower():
    cands = enumerate_candidates(ToySVDBackbone(text="separate"))
    text = [c for c in cands if c.tower == "text"]
    assert [c.name for c in text[:6]] == ["text.layers.0.self_attn.q_proj", "text.layers.0.self_attn.k_proj",
                                         "text.layers.0.self_attn.v_proj", "text.layers.0.self_attn.out_proj",
                                         "text.layers.0.mlp.fc1", "text.layers.0.mlp.fc2"]
    assert all(c.part == "" and c.slot == c.name for c in text)


def _names(bb, **spec):
    return [c.name for c in select_targets(bb, TargetSpec(**spec))]


def test_select_by_tower_layer_and_matrix():
    bb = ToySVDBackbone()
    assert _names(bb) == [c.name for c in enumerate_candidates(bb)]
    assert _names(bb, towers="vision", layers="top") == _fused_names(2)
    assert _names(bb, towers="text", layers="bottom") == _mha_names(0)  # 2 layers: 2/3 rounds to 1
    assert _names(bb, layers=(0,), matrices=("v", "fc2")) == [f"{V}.0.attn.qkv.v", f"{V}.0.mlp.fc2",
                                                             f"{T}.0.attn.in_proj.v", f"{T}.0.mlp.c_proj"]
    assert _names(bb, towers="text", layers="top_bottom", matrices=("o",)) == [f"{T}.0.attn.out_proj",
                                                                                  f"{T}.1.attn.out_proj"]
    assert _names(bb, towers="vision", layers=(2, 1), matrices=("k",)) == [f"{V}.1.attn.qkv.k", f"{V}.2.attn.qkv.k"]


def test_select_by_module_suffix_matches_whole_name_components():
    bb = ToySVDBackbone()
    # "proj" is the vision output projection; it is a suffix of out_proj/c_proj names only inside a component
    assert _names(bb, modules=("proj",)) == [f"{V}.{i}.attn.proj" for i in range(3)]
    assert _names(bb, modules=("attn.in_proj.v", "mlp.c_fc")) == [
        f"{T}.0.attn.in_proj.v", f"{T}.0.mlp.c_fc", f"{T}.1.attn.in_proj.v", f"{T}.1.mlp.c_fc"]
    assert _names(bb, modules=(f"{V}.1.mlp.fc1",)) == [f"{V}.1.mlp.fc1"]  # a whole name
    assert _names(bb, towers="text", modules=("fc1", "v")) == [f"{T}.0.attn.in_proj.v", f"{T}.1.attn.in_proj.v"]


def test_select_by_regular_expression_is_a_full_match():
    bb = ToySVDBackbone()
    assert _names(bb, modules=r".*\.1\.mlp\..*") == [f"{V}.1.mlp.fc1", f"{V}.1.mlp.fc2", f"{T}.1.mlp.c_fc",
                                                     f"{T}.1.mlp.c_proj"]
    with pytest.raises(TargetError):
        select_targets(bb, TargetSpec(modules=r"mlp"))  # found inside names, but no full match


def test_a_selection_of_nothing_is_refused_with_an_example_name():
    bb = ToySVDBackbone()
    spec = TargetSpec(towers="text", layers="middle")  # 2 layers: the middle third is empty
    with pytest.raises(TargetError) as info:
        select_targets(bb, spec)
    assert str(info.value) == (f"the target specification {spec.model_dump()} selects no matrix of toy-svd; "
                               f"target names look like '{V}.0.attn.qkv.q'")
    with pytest.raises(TargetError):
        select_targets(bb, TargetSpec(modules=("nothing",)))


@pytest.mark.parametrize("layers, tower, bad, top", [((0, 3), "vision", [3], 2), ((-1, 1), "vision", [-1], 2),
                                                      ((2,), "text", [2], 1)])
def test_layer_indices_that_do_not_exist_are_refused(layers, tower, bad, top):
    bb = ToySVDBackbone()
    with pytest.raises(TargetError) as info:
        select_targets(bb, TargetSpec(layers=layers, towers=tower))
    assert str(info.value) == f"layer indices {bad} do not exist in the {tower} tower of toy-svd (layers 0-{top})"


def test_candidate_shapes_and_sigma_total():
    bb = ToySVDBackbone()
    shapes = {c.name: candidate_shape(bb.model, c) for c in enumerate_candidates(bb)}
    expected = {name: tuple(w.shape) for name, w in sliced_weights(bb.model).items()}
    assert shapes == expected
    assert shapes[f"{V}.0.mlp.fc1"] == (HIDDEN, WIDTH) and shapes[f"{T}.0.attn.in_proj.q"] == (WIDTH, WIDTH)
    assert sigma_total(bb) == 30 * WIDTH  # every matrix has min(rows, columns) = 8
    assert sigma_total(bb, {"towers": "text", "matrices": ["q", "fc2"]}) == 2 * 2 * WIDTH
    assert sigma_total(bb, "mlp") == 10 * WIDTH


# --- adapt -----------------------------------------------------------------------------------------
def test_adapt_keeps_the_outputs_and_trains_only_sigma(tmp_path):
    bb = ToySVDBackbone()
    x = inputs()
    before = [t.detach() for t in bb(*x)]
    weights = {k: v.detach().clone() for k, v in sliced_weights(bb.model).items()}
    assert adapt(bb, "paper", cache_dir=tmp_path) is bb
    after = bb(*x)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    sig = sigma_parameters(bb)
    assert list(sig) == list(weights) and len(trainable) == 30
    assert {id(p) for p in sig.values()} == {id(p) for p in bb.parameters() if p.requires_grad}
    for name, s0 in initial_sigmas(bb).items():
        torch.testing.assert_close(s0, torch.linalg.svd(weights[name].double())[1].float(), rtol=1e-5, atol=1e-6)
    for name, w in effective_weights(bb).items():
        torch.testing.assert_close(w, weights[name], rtol=1e-5, atol=1e-5)
        assert not w.requires_grad
    assert trainable_count(bb) == 30 * WIDTH


def test_adapt_records_its_targets():
    bb = ToySVDBackbone()
    fresh_fingerprint = ToySVDBackbone().fingerprint()
    adapt(bb, {"towers": "both", "layers": [0], "matrices": ["k", "o", "fc1"]}, cache_dir=False)
    state = adapt_state(bb)
    assert state.preset is None and state.spec == TargetSpec(layers=(0,), matrices=("k", "o", "fc1"))
    assert state.base_fingerprint == fresh_fingerprint  # of the base weights, taken before modules change
    infos = adapted_modules(bb)
    assert list(infos) == [f"{V}.0.attn.qkv.k", f"{V}.0.attn.proj", f"{V}.0.mlp.fc1", f"{T}.0.attn.in_proj.k",
                           f"{T}.0.attn.out_proj", f"{T}.0.mlp.c_fc"]
    k = infos[f"{T}.0.attn.in_proj.k"]
    assert (k.name, k.tower, k.layer, k.matrix, k.shape, k.slot, k.part) == (
        f"{T}.0.attn.in_proj.k", "text", 0, "k", (WIDTH, WIDTH), f"{T}.0.attn.in_proj", "k")
    fc1 = infos[f"{V}.0.mlp.fc1"]
    assert (fc1.tower, fc1.layer, fc1.matrix, fc1.shape, fc1.slot, fc1.part) == (
        "vision", 0, "fc1", (HIDDEN, WIDTH), f"{V}.0.mlp.fc1", "")
    assert state.installed == [f"{V}.0.attn.qkv", f"{V}.0.attn.proj", f"{V}.0.mlp.fc1", f"{T}.0.mlp.c_fc",
                               f"{T}.0.attn"]
    infos.clear()
    assert len(adapted_modules(bb)) == 6  # a copy
    assert adapt(ToySVDBackbone(), "attention", cache_dir=False)._svd_state.preset == "attention"


def test_adapt_replaces_exactly_the_targeted_modules():
    bb = ToySVDBackbone()
    with torch.no_grad():  # nn.MultiheadAttention starts with zero biases: make dropping one visible
        for block in bb.model.transformer.resblocks:
            block.attn.in_proj_bias.normal_()
            block.attn.out_proj.bias.normal_()
    x = inputs()
    before = [t.detach() for t in bb(*x)]
    adapt(bb, {"layers": [1], "matrices": ["v", "fc2"]}, cache_dir=False)
    for a, b in zip(bb(*x), before):  # the untargeted output projection keeps its bias
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    m = bb.model
    qkv = m.visual.blocks[1].attn.qkv
    assert isinstance(qkv, SVDLinear) and qkv.part_names == ["q", "k", "v"] and qkv.adapted_parts == ["v"]
    assert isinstance(m.visual.blocks[1].mlp.fc2, SVDLinear) and m.visual.blocks[1].mlp.fc2.part_names == [""]
    assert type(m.visual.blocks[1].mlp.fc1) is nn.Linear and type(m.visual.blocks[0].attn.qkv) is nn.Linear
    attn = m.transformer.resblocks[1].attn
    assert isinstance(attn, SVDSelfAttention) and attn.in_proj.adapted_parts == ["v"]
    assert type(attn.out_proj) is nn.Linear  # not targeted: a frozen plain copy
    assert type(m.transformer.resblocks[0].attn) is nn.MultiheadAttention
    assert not any(p.requires_grad for n, p in bb.named_parameters() if "sigma" not in n)


def test_an_attention_with_only_its_output_targeted():
    bb = ToySVDBackbone()
    x = inputs()
    before = bb(*x)[1].detach()
    mha = bb.model.transformer.resblocks[0].attn
    in_w, in_b = mha.in_proj_weight.detach().clone(), mha.in_proj_bias.detach().clone()
    adapt(bb, {"towers": "text", "matrices": ["o"]}, cache_dir=False)
    attn = bb.model.transformer.resblocks[0].attn
    assert isinstance(attn, SVDSelfAttention) and isinstance(attn.out_proj, SVDLinear)
    assert type(attn.in_proj) is nn.Linear and not attn.in_proj.weight.requires_grad
    torch.testing.assert_close(attn.in_proj.weight, in_w, rtol=0, atol=0)
    torch.testing.assert_close(attn.in_proj.bias, in_b, rtol=0, atol=0)
    torch.testing.assert_close(bb(*x)[1], before, rtol=1e-5, atol=1e-5)


def test_adapt_defaults_to_the_paper_preset_and_auto_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path))
    bb = adapt(ToySVDBackbone())
    assert adapt_state(bb).preset == "paper" and len(sigma_parameters(bb)) == 30
    assert {m.mode for m in bb.modules() if isinstance(m, SVDLinear)} == {"auto"}


def test_float64_attention_with_a_plain_input_projection():
    bb = ToySVDBackbone().double()
    x = tuple(t.double() for t in inputs())
    before = bb(*x)[1].detach()
    adapt(bb, {"towers": "text", "matrices": ["o"]}, cache_dir=False)
    in_proj = bb.model.transformer.resblocks[0].attn.in_proj
    assert in_proj.weight.dtype == torch.float64
    torch.testing.assert_close(bb(*x)[1], before, rtol=1e-10, atol=1e-10)


def test_a_plain_copy_of_a_projection_without_bias_has_none():
    lin = _plain_linear(torch.ones(3, 2), None)
    assert lin.bias is None and lin.weight.shape == (3, 2) and not lin.weight.requires_grad


def test_adapt_uses_the_decomposition_cache(tmp_path):
    bb = adapt(ToySVDBackbone(), "mlp", cache_dir=tmp_path)
    assert (adapt_state(bb).cache_hits, adapt_state(bb).cache_misses) == (0, 10)
    again = adapt(ToySVDBackbone(), "paper", cache_dir=tmp_path)
    assert (adapt_state(again).cache_hits, adapt_state(again).cache_misses) == (10, 20)
    off = adapt(ToySVDBackbone(), "mlp", cache_dir=False)
    assert (adapt_state(off).cache_hits, adapt_state(off).cache_misses) == (0, 10)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 30


def test_adapt_mode_reaches_every_layer_and_set_mode_changes_it():
    bb = adapt(ToySVDBackbone(), "paper", cache_dir=False, mode="factorised")
    layers = [m for m in bb.modules() if isinstance(m, SVDLinear)]
    assert len(layers) == 3 * 4 + 2 * 4 and {m.mode for m in layers} == {"factorised"}
    set_mode(bb, "rebuilt")
    assert {m.mode for m in layers} == {"rebuilt"}


def test_progress_counts_matrices(monkeypatch):
    import medclipsvd.io.progress as progress

    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.n, self.closed = kwargs, 0, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(progress, "progress_bar", lambda **kw: Bar(**kw))
    adapt(ToySVDBackbone(), {"matrices": ["q", "k", "fc1"]}, cache_dir=False, progress=True)
    assert len(bars) == 1 and bars[0].kwargs == {"total": 15, "desc": "SVD set-up", "unit": "matrix"}
    assert bars[0].n == 15 and bars[0].closed
    adapt(ToySVDBackbone(), "mlp", cache_dir=False)
    assert len(bars) == 1


def test_adapting_twice_and_using_an_unadapted_backbone_are_refused():
    bb = adapt(ToySVDBackbone(), "mlp", cache_dir=False)
    with pytest.raises(AdapterError) as info:
        adapt(bb, "mlp", cache_dir=False)
    assert str(info.value) == "backbone 'toy-svd' is already adapted; merge() it or load a fresh one"
    plain = ToySVDBackbone()
    for call in (adapted_modules, sigma_parameters, initial_sigmas, effective_weights, merge,
                 lambda b: set_mode(b, "auto")):
        with pytest.raises(AdapterError) as info:
            call(plain)
        assert str(info.value) == "backbone 'toy-svd' is not adapted; call adapt(backbone, 'paper') first"
    assert adapt_state(plain) is None


def test_merge_folds_the_trained_sigma_into_plain_modules():
    bb = adapt(ToySVDBackbone(), "paper", cache_dir=False)
    with torch.no_grad():
        for i, p in enumerate(sigma_parameters(bb).values()):
            p.mul_(1.0 + 0.1 * (i % 3))
    x = inputs()
    adapted_out = [t.detach() for t in bb(*x)]
    trained = effective_weights(bb)
    state = adapt_state(bb)
    assert merge(bb) is bb
    assert adapt_state(bb) is None and bb._merged_from is state
    assert not any(isinstance(m, (SVDLinear, SVDSelfAttention)) for m in bb.modules())
    assert type(bb.model.transformer.resblocks[0].attn) is nn.MultiheadAttention
    merged_w = sliced_weights(bb.model)
    for name, w in trained.items():
        torch.testing.assert_close(merged_w[name], w, rtol=1e-5, atol=1e-6)
    for a, b in zip(bb(*x), adapted_out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in bb.parameters())


def test_load_sigmas_copies_checked_values():
    bb = adapt(ToySVDBackbone(), "mlp", cache_dir=False)
    new = {n: torch.arange(p.numel(), dtype=torch.float64) + 0.5 for n, p in sigma_parameters(bb).items()}
    load_sigmas(bb, new)
    for n, p in sigma_parameters(bb).items():
        assert p.dtype == torch.float32 and p.requires_grad
        torch.testing.assert_close(p.detach(), new[n].float(), rtol=0, atol=0)


def test_load_sigmas_refusals():
    bb = adapt(ToySVDBackbone(), "mlp", cache_dir=False)
    good = {n: p.detach().clone() for n, p in sigma_parameters(bb).items()}
    names = list(good)
    before = {n: t.clone() for n, t in good.items()}

    def refused(sigmas, message, source=None):
        with pytest.raises(AdapterError) as info:
            load_sigmas(bb, sigmas) if source is None else load_sigmas(bb, sigmas, source)
        assert str(info.value) == message
        for n, p in sigma_parameters(bb).items():  # nothing copied
            torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)

    missing = {n: t for n, t in good.items() if n not in names[:3]}
    refused(missing, "σ in the given tensors do not match the adapted matrices: 3 missing "
                     f"(e.g. {sorted(names[:3])[:2]}), 0 unexpected (e.g. [])")
    extra = {**good, "a.b": torch.ones(8), "c.d": torch.ones(8), "e.f": torch.ones(8)}
    refused(extra, "σ in f.safetensors do not match the adapted matrices: 0 missing (e.g. []), 3 unexpected "
                   "(e.g. ['a.b', 'c.d'])", "f.safetensors")
    last = names[-1]
    refused({**good, last: torch.ones(7)}, f"σ for {last} in the given tensors has shape (7,), expected (8,)")
    refused({**good, last: torch.ones(8, dtype=torch.int32)},
            f"σ for {last} in the given tensors has dtype int32; σ must be floating point")
    for bad in (float("nan"), float("inf")):
        t = torch.ones(8)
        t[3] = bad
        refused({**good, last: t}, f"σ for {last} in the given tensors holds NaN/inf values (a diverged training); "
                                   "retrain with a lower --lr")
