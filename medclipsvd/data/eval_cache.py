"""The preprocessed evaluation cache: test (and probe) images stored after decoding, resizing and centre
cropping, at the model's input size, so a sweep decodes each image once instead of once per run.

Entries are ``.npy`` files (read with ``allow_pickle=False``: nothing is ever unpickled) holding what
``EvalTransform.prepare`` returns: uint8 for 8-bit sources (1 channel for grey images, 50 KB at 224 px),
float32 for deeper ones (DICOM, 16-bit PNG, NIfTI), so normalising a cached entry gives the transform's
output bit for bit. The key is a hash of the file's *content* (plus frame/slice index, the reader version and
the transform's geometry): renamed or copied files hit, an edited file misses, and runs on different
machines sharing a cache folder agree. Mean/std are applied after the cache, so CLIP and BiomedCLIP at
224 px share entries.

The cache holds pixel data (no DICOM tags); it lives under the user cache (``$MEDCLIPSVD_CACHE/eval``, else
``~/.cache/medclipsvd/eval``) unless ``--cache-dir`` says otherwise, and ``--cache-dir off`` disables it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medclipsvd.data.dataset import CACHE_VERSION, ImageDataset
from medclipsvd.data.readers import read_image
from medclipsvd.data.transforms import EvalTransform
from medclipsvd.data.types import NPZ_KEY_SEP, Sample

OFF = ("off", "none", "false", "0", "")
_DIGESTS: dict[tuple[str, int, int], str] = {}   # (file, size, mtime_ns) -> content hash, per process


def default_eval_cache_dir() -> Path:
    """``$MEDCLIPSVD_CACHE/eval``, else ``$XDG_CACHE_HOME/medclipsvd/eval`` (``~/.cache/...``)."""
    root = os.environ.get("MEDCLIPSVD_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medclipsvd"
    return base.expanduser() / "eval"


def resolve_cache_dir(cache_dir: str | os.PathLike | None | bool) -> Path | None:
    """None/True: the default folder; False or 'off': no cache; else that folder."""
    if cache_dir is None or cache_dir is True:
        return default_eval_cache_dir()
    if cache_dir is False or str(cache_dir).strip().lower() in OFF:
        return None
    return Path(cache_dir).expanduser()


def file_digest(path: str) -> str:
    """xxh3-128 of the file's bytes, remembered per (path, size, mtime) in this process (a MedMNIST .npz
    holding thousands of images is hashed once, not once per image)."""
    import xxhash

    st = os.stat(path)
    memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = xxhash.xxh3_128()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def entry_key(sample: Sample, transform: EvalTransform) -> str:
    import xxhash

    file, _, member = sample.path.partition(NPZ_KEY_SEP)
    raw = f"{CACHE_VERSION}|{file_digest(file)}|{member}|{sample.index}|{transform.signature()}"
    return xxhash.xxh3_128_hexdigest(raw.encode("utf-8"))


class PreprocessedDataset(ImageDataset):
    """``ImageDataset`` for evaluation whose items come from the preprocessed cache in ``folder``;
    misses are decoded, prepared, written (atomically: DataLoader workers, Ray tasks and Slurm jobs may
    share the folder) and returned. Same items as ``ImageDataset(samples, transform, cache=False)``."""

    def __init__(self, samples: list[Sample], transform: EvalTransform, folder: str | os.PathLike):
        super().__init__(samples, transform, cache=False)
        self.cache_folder = Path(folder)  # not ImageDataset.folder: that one holds decoded full-size images
        self.cache_folder.mkdir(parents=True, exist_ok=True)

    def _prepared(self, i: int) -> np.ndarray:
        s = self.samples[i]
        key = entry_key(s, self.transform)
        path = self.cache_folder / key[:2] / f"{key}.npy"
        if path.exists():
            try:
                arr = np.load(path, allow_pickle=False)
                self.hits += 1
                return arr
            except (OSError, ValueError):  # torn or foreign file: prepare again and overwrite
                pass
        self.misses += 1
        arr = self.transform.prepare(read_image(s.path, s.index))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, arr, allow_pickle=False)
        os.replace(tmp, path)
        return arr

    def __getitem__(self, i: int):
        return self.transform.normalise(self._prepared(i)), self.samples[i].label


def eval_dataset(samples: list[Sample], transform, cache_dir: str | os.PathLike | None | bool = None):
    """The dataset to evaluate `samples` with: through the preprocessed cache when it is on and the
    transform is the standard evaluation transform, else decoded every time (volume samples too: their
    pixels depend on the series folder's files and the view, which the content key does not cover)."""
    folder = resolve_cache_dir(cache_dir)
    if folder is None or not isinstance(transform, EvalTransform) or any(s.view for s in samples):
        return ImageDataset(samples, transform, cache=False)
    return PreprocessedDataset(samples, transform, folder)
