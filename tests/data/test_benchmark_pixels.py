"""Benchmark datasets keep reading 2-D files exactly as before the volume path existed: their samples carry
no volume view, and the eval tensors are bit-identical to the reference pipeline (PIL -> RGB -> open_clip's
eval transform) on the real benchmark images."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medclipsvd.data import CLIP_MEAN, CLIP_STD, ImageDataset, build_transform, load_dataset

BIO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "biomedical"
NAMES = sorted(p.name for p in BIO.iterdir()) if BIO.is_dir() else []
pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not NAMES, reason=f"benchmark data not at {BIO}")]


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_eval_pixels_bit_identical(name):
    import open_clip
    from PIL import Image

    splits = load_dataset(name, BIO, allow_missing=True, verify="exists")
    samples = (splits.test + splits.train)[:: max(1, len(splits.test + splits.train) // 6)][:6]
    assert samples and all(s.view is None for s in splits.train + splits.val + splits.test)
    tf = build_transform(224, CLIP_MEAN, CLIP_STD, train=False)
    ref_tf = open_clip.image_transform(224, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    ds = ImageDataset(samples, tf, cache=False)
    for i, s in enumerate(samples):
        with Image.open(s.path) as im:
            ref = ref_tf(im.convert("RGB"))
        assert torch.equal(ds[i][0], ref), s.path
