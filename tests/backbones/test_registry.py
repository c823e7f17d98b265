import pytest
import torch

from medclipsvd.backbones import get_spec, list_backbones, load_backbone
from medclipsvd.errors import BackboneNotFoundError


def test_registry_lists_the_packaged_backbones():
    assert list_backbones() == ["biomedclip", "clip-vit-b16", "tiny-biomedclip", "tiny-clip", "tiny-siglip"]


def test_unknown_backbone_names_the_choices():
    with pytest.raises(BackboneNotFoundError, match="tiny-clip"):
        get_spec("clip-vit-b99")


@pytest.mark.parametrize("name, family, vision_block", [
    ("tiny-clip", "openclip-vit", "ResidualAttentionBlock"),
    ("tiny-biomedclip", "timm-bert", "Block"),
    ("tiny-siglip", "openclip-siglip", "Block"),
])
def test_tiny_backbones_have_the_full_size_module_structure(name, family, vision_block):
    bb = load_backbone(name)
    assert bb.family == family
    assert type(bb.blocks("vision")[0]).__name__ == vision_block
    assert bb.num_layers("vision") == bb.num_layers("text") == 6
    x = torch.randn(2, 3, bb.image_size, bb.image_size)
    logits = bb(x, bb.tokenize(["a photo of a cyst kidney.", "a photo of a normal kidney.", "x"]))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-biomedclip", "tiny-siglip"])
def test_tiny_backbones_are_deterministic(name):
    a, b = load_backbone(name), load_backbone(name)
    assert a.fingerprint() == b.fingerprint()
    assert load_backbone(name, seed=1).fingerprint() != a.fingerprint()


def test_generated_wordpiece_tokenizer_knows_the_prompt_words():
    bb = load_backbone("tiny-biomedclip")
    tokens = bb.tokenize(["a photo of a glioma tumor."])
    unk = 1
    assert tokens.shape == (1, 9) and (tokens != unk).all()
