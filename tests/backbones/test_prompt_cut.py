"""Prompts are cut to the longest real prompt: the embeddings must not change."""
import pytest
import torch

from medclipsvd.backbones import load_backbone

PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "a chest xray of viral pneumonia lungs.", "x"]


def _full_length_reference(bb, texts):
    full = bb.tokenizer(texts, cut=False)
    if bb.family == "openclip-vit":
        return bb.model.encode_text(full, normalize=True), full
    return torch.nn.functional.normalize(bb.model.text(full), dim=-1), full


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-biomedclip"])
def test_cut_prompts_give_the_same_embeddings(name):
    bb = load_backbone(name)
    cut = bb.tokenize(PROMPTS)
    with torch.no_grad():
        ref, full = _full_length_reference(bb, PROMPTS)
        ours = bb.encode_text(cut)
    assert cut.shape[1] < full.shape[1] // 4  # the cut is real
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip-vit-b16", "biomedclip"])
def test_cut_prompts_full_size(name):
    bb = load_backbone(name, random_init=True)
    with torch.no_grad():
        ref, _ = _full_length_reference(bb, PROMPTS)
        ours = bb.encode_text(bb.tokenize(PROMPTS))
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-5)
