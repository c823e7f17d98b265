"""At initialisation the adapted model equals the original (fp32 logits within 1e-4 relative)."""
import pytest
import torch

PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "a chest xray of covid lungs."]

from medclipsvd.backbones import load_backbone
from medclipsvd.svd import TargetSpec, adapt, adapt_state, set_mode, trainable_count



def _logits(bb, images):
    with torch.no_grad():
        return bb(images, bb.tokenize(PROMPTS)).double()


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("targets", ["paper", TargetSpec(matrices=("o",)), TargetSpec(matrices=("v",), layers="top"),
                                     TargetSpec(towers="text", matrices=("k", "fc2"))])
@pytest.mark.parametrize("mode", ["auto", "factorised", "rebuilt"])
def test_tiny_equivalence_at_init(tiny, batch, svd_cache, targets, mode):
    before = _logits(tiny, batch)
    adapt(tiny, targets, cache_dir=svd_cache)
    set_mode(tiny, mode)
    assert _rel(_logits(tiny, batch), before) < 1e-4
    assert trainable_count(tiny) == sum(min(i.shape) for i in adapt_state(tiny).targets.values())


@pytest.mark.slow
@pytest.mark.parametrize("name, trainable", [("clip-vit-b16", 92_160), ("biomedclip", 110_592)])
def test_full_size_equivalence_and_paper_counts(name, trainable, batch):
    bb = load_backbone(name, random_init=True)
    total = sum(p.numel() for p in bb.parameters())
    before = _logits(bb, batch)
    adapt(bb, "paper")
    assert trainable_count(bb) == trainable
    assert total == {"clip-vit-b16": 149_620_737, "biomedclip": 195_902_721}[name]
    assert _rel(_logits(bb, batch), before) < 1e-4
