import pytest

from medclipsvd.backbones import load_backbone
from medclipsvd.errors import TargetError
from medclipsvd.svd import PRESETS, TargetSpec, band_layers, enumerate_candidates, select_targets

# the reference's include_train_layers for 12-layer towers
REFERENCE_BANDS_12 = {
    "all": list(range(12)), "top": [8, 9, 10, 11], "bottom": [0, 1, 2, 3], "middle": [4, 5, 6, 7],
    "top_middle": list(range(4, 12)), "bottom_middle": list(range(0, 8)), "top_bottom": [0, 1, 2, 3, 8, 9, 10, 11],
}


@pytest.mark.parametrize("band, expected", REFERENCE_BANDS_12.items())
def test_bands_match_the_reference_for_12_layers(band, expected):
    assert band_layers(band, 12) == expected


@pytest.mark.parametrize("band, expected", {
    "all": [0, 1, 2, 3, 4, 5], "top": [4, 5], "bottom": [0, 1], "middle": [2, 3],
    "top_middle": [2, 3, 4, 5], "bottom_middle": [0, 1, 2, 3], "top_bottom": [0, 1, 4, 5]}.items())
@pytest.mark.parametrize("name", ["tiny-clip", "tiny-biomedclip"])
def test_every_band_selects_its_layers_in_both_towers(name, band, expected):
    bb = load_backbone(name)
    chosen = select_targets(bb, TargetSpec(layers=band))
    for tower in ("vision", "text"):
        assert sorted({c.layer for c in chosen if c.tower == tower}) == expected
    assert len(chosen) == 2 * 6 * len(expected)


def test_unknown_band_is_refused():
    with pytest.raises(ValueError):
        TargetSpec(layers="upper")


@pytest.mark.parametrize("spec, count", [
    (TargetSpec(), 72),
    (TargetSpec(towers="vision"), 36),
    (TargetSpec(towers="text", matrices=("q", "v")), 12),
    (TargetSpec(layers=(0, 5), matrices=("fc1",)), 4),
    (TargetSpec(modules=("attn.in_proj.v", "mlp.c_fc")), 24),
    (TargetSpec(modules=r"visual\..*\.(0|1)\.attn\.out_proj"), 2),
])
def test_target_counts_on_tiny_clip(spec, count):
    assert len(select_targets(load_backbone("tiny-clip"), spec)) == count


def test_fused_and_separate_qkv_are_decomposed_separately():
    clip = {c.name for c in select_targets(load_backbone("tiny-clip"), TargetSpec(layers=(0,), matrices=("q", "k", "v")))}
    assert "visual.transformer.resblocks.0.attn.in_proj.q" in clip
    assert "transformer.resblocks.0.attn.in_proj.v" in clip
    bio = {c.name for c in select_targets(load_backbone("tiny-biomedclip"), TargetSpec(layers=(0,), matrices=("q", "k", "v")))}
    assert bio == {
        "visual.trunk.blocks.0.attn.qkv.q", "visual.trunk.blocks.0.attn.qkv.k", "visual.trunk.blocks.0.attn.qkv.v",
        "text.transformer.encoder.layer.0.attention.self.query", "text.transformer.encoder.layer.0.attention.self.key",
        "text.transformer.encoder.layer.0.attention.self.value"}


def test_bert_attention_output_and_mlp_output_are_distinct_targets():
    # the reference's substring rule couples them; we do not
    names = {c.name for c in select_targets(load_backbone("tiny-biomedclip"), TargetSpec(towers="text", matrices=("o",)))}
    assert "text.transformer.encoder.layer.0.attention.output.dense" in names
    assert not any(n.endswith("layer.0.output.dense") for n in names)


@pytest.mark.parametrize("spec, message", [
    (TargetSpec(layers=(0, 6)), "layer indices \\[6\\] do not exist"),
    (TargetSpec(modules=("no.such.module",)), "selects no matrix"),
])
def test_bad_selections_say_what_is_wrong(spec, message):
    with pytest.raises(TargetError, match=message):
        select_targets(load_backbone("tiny-clip"), spec)


def test_presets_are_specs_and_candidates_cover_the_paper_preset():
    assert set(PRESETS) >= {"paper", "attention", "mlp"}
    bb = load_backbone("tiny-biomedclip")
    assert len(select_targets(bb, PRESETS["paper"])) == len(enumerate_candidates(bb))
