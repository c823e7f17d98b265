"""``ImageDataset``: samples -> (tensor, label), with decoded images cached across epochs and seeds."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from medclipsvd.data.preprocess import PreprocessError
from medclipsvd.data.readers.dispatch import read_image
from medclipsvd.data.volumes.views import read_view
from medclipsvd.data.types import NPZ_KEY_SEP, Sample

try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover - torch is a dependency
    _TorchDataset = object

# Bump when a reader changes what it returns, so stale disk caches are not reused.
CACHE_VERSION = "2"


def _compact(img: np.ndarray) -> np.ndarray:
    """Grey images (three equal channels) are stored as one channel, exactly-8-bit images as uint8: a
    grey 8-bit image takes 1/12 of its float32 RGB size. Lossless: ``_expand`` restores the same array."""
    if np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2]):
        img = img[:, :, 0]
    from medclipsvd.data.transforms import _as_uint8_if_exact

    q = _as_uint8_if_exact(img)
    return q if q is not None else np.ascontiguousarray(img)


def _expand(stored: np.ndarray) -> np.ndarray:
    img = stored.astype(np.float32) / np.float32(255.0) if stored.dtype == np.uint8 else stored
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def cache_key(sample: Sample) -> str:
    """Identifies the decoded image: file, index, size and modification time, reader version."""
    view = getattr(sample, "view", None)
    file = sample.path.partition(NPZ_KEY_SEP)[0] if not view else sample.path.split("#series=")[0]
    try:
        st = os.stat(file)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    raw = f"{CACHE_VERSION}|{sample.path}|{sample.index}|{stamp}"
    if view:  # volumes: the view is part of the decoded image (2-D keys stay as they were)
        raw += f"|{view}"
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()


class ImageDataset(_TorchDataset):
    """A torch ``Dataset`` over ``Sample``s returning ``(transform(image), label)``.

    ``cache``: ``True`` keeps decoded images in this process's memory (8-bit images as uint8); a folder
    path stores them as ``.npy`` files (loaded with ``allow_pickle=False``), shared by DataLoader workers,
    epochs, seeds and later runs; ``False`` decodes every time. The transform runs after the cache, so
    random augmentation stays random. With DataLoader workers, prefer a folder: each worker process has its
    own memory cache."""

    def __init__(self, samples: list[Sample], transform=None, cache: bool | str | os.PathLike = True):
        self.samples = list(samples)
        self.transform = transform
        self.memory: dict[int, np.ndarray] | None = {} if cache is True else None
        self.folder: Path | None = None
        if cache not in (True, False, None):
            self.folder = Path(cache)
            self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, i: int) -> np.ndarray:
        """The decoded float32 HxWx3 image of sample ``i`` (through the cache)."""
        if self.memory is not None and i in self.memory:
            self.hits += 1
            return _expand(self.memory[i])
        s = self.samples[i]
        if self.folder is not None:
            f = self.folder / f"{cache_key(s)}.npy"
            if f.exists():
                try:
                    arr = np.load(f, allow_pickle=False)
                    self.hits += 1
                    return _expand(arr)
                except (OSError, ValueError):  # torn write from a killed run: decode again
                    pass
        self.misses += 1
        img = read_view(s.path, s.index, s.view) if s.view else read_image(s.path, s.index)
        stored = _compact(img)
        if self.memory is not None:
            self.memory[i] = stored
        if self.folder is not None:
            import io

            from medclipsvd.io import write_bytes

            buf = io.BytesIO()
            np.save(buf, stored, allow_pickle=False)
            try:  # atomic (workers never read half a file); a full disk only costs decoding time
                write_bytes(self.folder / f"{cache_key(s)}.npy", buf.getvalue())
            except OSError:
                pass
        return img

    def __getitem__(self, i: int):
        img = self.image(i)
        if self.transform is None:
            return img, self.samples[i].label
        try:
            x = self.transform(img)
        except PreprocessError as exc:  # a user's MONAI transform failed: say on which image
            raise exc.with_file(self.samples[i].path) from None
        return x, self.samples[i].label
