"""The preprocessed evaluation cache: items equal the uncached dataset's bit for bit (8-bit, grey, 16-bit),
entries are keyed by content, safe to load, and wired into runs without changing their results."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from medclipsvd.data import ImageDataset, Sample, build_transform
from medclipsvd.data.eval_cache import (PreprocessedDataset, default_eval_cache_dir, eval_dataset,
                                        resolve_cache_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(d / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (48, 30), dtype=np.uint8)).save(d / "grey.png")
    Image.fromarray(rng.integers(0, 65536, (33, 45), dtype=np.uint16)).save(d / "deep16.png")
    return [Sample(str(d / n), i, f"c{i}") for i, n in enumerate(["rgb.png", "grey.png", "deep16.png"])]


def _items(ds):
    return [ds[i] for i in range(len(ds))]


def test_cached_items_equal_uncached_bit_for_bit(images, tmp_path):
    tf = build_transform(32, train=False)
    plain = _items(ImageDataset(images, tf, cache=False))
    cold_ds = PreprocessedDataset(images, tf, tmp_path)
    cold = _items(cold_ds)
    warm_ds = PreprocessedDataset(images, tf, tmp_path)  # another run / worker on the same folder
    warm = _items(warm_ds)
    assert (cold_ds.misses, warm_ds.hits, warm_ds.misses) == (3, 3, 0)
    for (x0, y0), (x1, y1), (x2, y2) in zip(plain, cold, warm):
        assert y0 == y1 == y2
        assert x0.dtype == x2.dtype == torch.float32 and x0.shape == x2.shape == (3, 32, 32)
        assert torch.equal(x0, x1) and torch.equal(x0, x2)
    entries = sorted(tmp_path.rglob("*.npy"))
    assert len(entries) == 3
    stored = {e.name: np.load(e, allow_pickle=False) for e in entries}  # plain arrays, never pickles
    kinds = sorted((a.dtype.name, a.shape[0]) for a in stored.values())
    assert kinds == [("float32", 1), ("uint8", 1), ("uint8", 3)]  # 16-bit kept exact; grey as one channel


def test_keyed_by_content_and_transform(images, tmp_path):
    tf = build_transform(32, train=False)
    first = PreprocessedDataset(images[:1], tf, tmp_path / "c")
    _items(first)
    copy = tmp_path / "renamed.png"
    shutil.copy(images[0].path, copy)
    moved = PreprocessedDataset([Sample(str(copy), 0, "c0")], tf, tmp_path / "c")
    _items(moved)
    assert moved.hits == 1  # same bytes under another name: no decoding
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(copy)  # edited file: new entry
    edited = PreprocessedDataset([Sample(str(copy), 0, "c0")], tf, tmp_path / "c")
    _items(edited)
    assert edited.misses == 1
    other = PreprocessedDataset(images[:1], build_transform(24, train=False), tmp_path / "c")
    assert other[0][0].shape == (3, 24, 24) and other.misses == 1  # another input size: another entry


def test_torn_entry_is_rebuilt(images, tmp_path):
    tf = build_transform(32, train=False)
    ds = PreprocessedDataset(images[:1], tf, tmp_path)
    x = ds[0][0]
    entry = next(tmp_path.rglob("*.npy"))
    entry.write_bytes(b"\x93NUMPY garbage")
    again = PreprocessedDataset(images[:1], tf, tmp_path)
    assert torch.equal(again[0][0], x) and again.misses == 1


def test_resolve_and_fallbacks(images, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "root"))
    assert default_eval_cache_dir() == tmp_path / "root" / "eval"
    assert resolve_cache_dir(None) == tmp_path / "root" / "eval"
    assert resolve_cache_dir("off") is None and resolve_cache_dir(False) is None
    assert resolve_cache_dir(str(tmp_path / "x")) == tmp_path / "x"
    assert type(eval_dataset(images, build_transform(32, train=False), "off")) is ImageDataset
    train_tf = build_transform(32, train=True)  # random transforms are never cached
    assert type(eval_dataset(images, train_tf, tmp_path / "x")) is ImageDataset
    assert isinstance(eval_dataset(images, build_transform(32, train=False), tmp_path / "x"), PreprocessedDataset)


def _entry_of(sample, tf, folder):
    from medclipsvd.data.eval_cache import entry_key

    key = entry_key(sample, tf)
    return folder / key[:2] / f"{key}.npy"


@pytest.fixture
def fresh_warning(monkeypatch):
    import medclipsvd.data.eval_cache as ec

    monkeypatch.setattr(ec, "_warned", False)  # the warning is once per process


@pytest.mark.parametrize("with_sidecars", [False, True], ids=["entries", "entries-and-digests"])
def test_swapped_entries_are_detected_and_recomputed(images, tmp_path, fresh_warning, with_sidecars):
    tf = build_transform(32, train=False)
    plain = _items(ImageDataset(images[:2], tf, cache=False))
    _items(PreprocessedDataset(images[:2], tf, tmp_path))
    a, b = (_entry_of(s, tf, tmp_path) for s in images[:2])
    assert not np.array_equal(np.load(a), np.load(b))  # the swap below changes what a lookup would return
    pairs = [(a, b)] + ([(a.with_suffix(".sha256"), b.with_suffix(".sha256"))] if with_sidecars else [])
    for x, y in pairs:
        x_bytes, y_bytes = x.read_bytes(), y.read_bytes()
        x.write_bytes(y_bytes)
        y.write_bytes(x_bytes)
    again = PreprocessedDataset(images[:2], tf, tmp_path)
    with pytest.warns(UserWarning, match="does not match its recorded digest"):
        items = _items(again)
    assert (again.hits, again.misses, again.rejected) == (0, 2, 2)
    for (x0, y0), (x1, y1) in zip(plain, items):
        assert y0 == y1 and torch.equal(x0, x1)
    healed = PreprocessedDataset(images[:2], tf, tmp_path)  # recomputed entries were written back, verified
    assert torch.equal(_items(healed)[0][0], plain[0][0]) and (healed.hits, healed.rejected) == (2, 0)


def test_edited_entry_is_detected_and_warned_once(images, tmp_path, fresh_warning):
    import warnings

    tf = build_transform(32, train=False)
    plain = _items(ImageDataset(images, tf, cache=False))
    _items(PreprocessedDataset(images, tf, tmp_path))
    for s in images:  # a valid .npy of the right shape and dtype, other pixels
        entry = _entry_of(s, tf, tmp_path)
        arr = np.load(entry)
        np.save(entry, (arr + 1) if arr.dtype == np.float32 else (255 - arr), allow_pickle=False)
    again = PreprocessedDataset(images, tf, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = _items(again)
    assert len([w for w in caught if "recorded digest" in str(w.message)]) == 1
    assert again.rejected == 3
    for (x0, _), (x1, _) in zip(plain, items):
        assert torch.equal(x0, x1)


def test_entry_without_digest_is_recomputed_silently(images, tmp_path, fresh_warning):
    import warnings

    tf = build_transform(32, train=False)
    plain = _items(ImageDataset(images[:1], tf, cache=False))
    _items(PreprocessedDataset(images[:1], tf, tmp_path))
    entry = _entry_of(images[0], tf, tmp_path)
    entry.with_suffix(".sha256").unlink()  # an entry of a version that wrote no digests, here planted
    np.save(entry, np.zeros_like(np.load(entry)), allow_pickle=False)
    again = PreprocessedDataset(images[:1], tf, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = again[0][0]
    assert torch.equal(x, plain[0][0]) and (again.hits, again.misses, again.rejected) == (0, 1, 0)
    assert entry.with_suffix(".sha256").is_file()
