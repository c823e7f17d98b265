"""Transforms (eval == open_clip's preprocessing; train crop/flip rules) and the decoded-image cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_synth import write_image
from medclipsvd.data import CLIP_MEAN, CLIP_STD, ImageDataset, Sample, build_transform
import medclipsvd.data.dataset as dataset_mod


@pytest.mark.parametrize("h,w,size", [(37, 53, 224), (300, 200, 224), (224, 224, 224), (10, 400, 32)])
def test_eval_equals_open_clip_bit_for_bit(h, w, size):
    import open_clip

    arr = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = open_clip.image_transform(size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)(Image.fromarray(arr))
    ours = build_transform(size, CLIP_MEAN, CLIP_STD, train=False)(arr.astype(np.float32) / 255.0)
    assert ours.shape == (3, size, size) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)


def test_eval_on_deep_images_stays_close_to_8bit_path():
    # a 16-bit-like image: per-channel float resize vs open_clip on its 8-bit rounding
    import open_clip

    img = np.random.default_rng(0).random((50, 70, 3)).astype(np.float32)
    ref = open_clip.image_transform(32, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)(
        Image.fromarray(np.rint(img * 255).astype(np.uint8)))
    ours = build_transform(32, CLIP_MEAN, CLIP_STD, train=False)(img)
    assert (ours - ref).abs().max() < 0.05  # 8-bit rounding is ~0.015 after normalising, PIL rounding too


def _half_image():
    img = np.zeros((40, 40, 3), np.float32)
    img[:, 20:] = 1.0  # dark left, bright right
    return img


@pytest.mark.parametrize("hflip,expect_flips", [(False, False), (True, True)])
def test_train_flip_rule(hflip, expect_flips):
    tf = build_transform(16, (0, 0, 0), (1, 1, 1), train=True, hflip=hflip, scale=(1.0, 1.0), seed=0)
    flipped = 0
    for _ in range(30):
        x = tf(_half_image())
        assert x.shape == (3, 16, 16)
        flipped += int(x[:, :, :4].mean() > x[:, :, -4:].mean())
    assert (flipped > 0) == expect_flips


def test_train_crops_vary_and_normalise():
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    tf = build_transform(24, CLIP_MEAN, CLIP_STD, train=True, seed=1)
    a, b = tf(img), tf(img)
    assert a.shape == (3, 24, 24) and not torch.equal(a, b)


def test_train_reseed_reproduces_the_draw():
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    tf = build_transform(24, CLIP_MEAN, CLIP_STD, train=True)
    tf.reseed(5)
    a = tf(img)
    tf(img)
    tf.reseed(5)
    assert torch.equal(a, tf(img))
    tf.reseed(6)
    assert not torch.equal(a, tf(img))


def _pngs(tmp_path, n=4):
    return [Sample(str(write_image(tmp_path / f"{i}.png", seed=i, size=12)), i % 2, f"c{i % 2}") for i in range(n)]


def _count_reads(monkeypatch):
    calls = []
    real = dataset_mod.read_image
    monkeypatch.setattr(dataset_mod, "read_image", lambda p, i=None: calls.append(p) or real(p, i))
    return calls


def test_memory_cache_decodes_once(tmp_path, monkeypatch):
    calls = _count_reads(monkeypatch)
    ds = ImageDataset(_pngs(tmp_path), build_transform(8, train=False), cache=True)
    first = [ds[i][0] for i in range(len(ds))]
    second = [ds[i][0] for i in range(len(ds))]
    assert len(calls) == 4 and ds.hits == 4 and ds.misses == 4
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert ds[1][1] == 1


def test_no_cache_decodes_every_time(tmp_path, monkeypatch):
    calls = _count_reads(monkeypatch)
    ds = ImageDataset(_pngs(tmp_path), None, cache=False)
    for _ in range(2):
        for i in range(len(ds)):
            ds[i]
    assert len(calls) == 8


def test_folder_cache_is_shared_and_exact(tmp_path, monkeypatch):
    samples = _pngs(tmp_path / "img")
    cache = tmp_path / "cache"
    calls = _count_reads(monkeypatch)
    a = ImageDataset(samples, None, cache=str(cache))
    imgs = [a[i][0] for i in range(4)]
    b = ImageDataset(samples, None, cache=cache)  # a later run / another worker
    again = [b[i][0] for i in range(4)]
    assert len(calls) == 4 and b.hits == 4
    assert all(np.array_equal(x, y) for x, y in zip(imgs, again))
    assert all(np.load(f).dtype == np.uint8 for f in cache.glob("*.npy"))  # 8-bit images stored compactly


def test_folder_cache_notices_a_changed_file(tmp_path, monkeypatch):
    samples = _pngs(tmp_path / "img", n=1)
    cache = tmp_path / "cache"
    ImageDataset(samples, None, cache=cache)[0]
    import os
    import time

    write_image(Path(samples[0].path), seed=99, size=12)
    os.utime(samples[0].path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    calls = _count_reads(monkeypatch)
    ImageDataset(samples, None, cache=cache)[0]
    assert len(calls) == 1


def test_float_images_cached_without_loss(tmp_path):
    from test_dicom import make_dicom

    p = make_dicom(tmp_path / "a.dcm", np.array([[0, 1001], [2000, 4095]], np.uint16), bits_stored=12)
    s = [Sample(str(p), 0, "x")]
    ds = ImageDataset(s, None, cache=tmp_path / "c")
    first = ds[0][0]
    second = ImageDataset(s, None, cache=tmp_path / "c")[0][0]
    assert second.dtype == np.float32 and np.array_equal(first, second)


def test_transforms_and_dataset_pickle_for_workers(tmp_path):
    import pickle

    samples = _pngs(tmp_path, n=2)
    for tf in (build_transform(16, train=True, seed=0), build_transform(16, train=False)):
        ds = pickle.loads(pickle.dumps(ImageDataset(samples, tf, cache=tmp_path / "c")))
        assert ds[0][0].shape == (3, 16, 16)
