"""The preprocessed evaluation cache: test (and probe) images stored after decoding, resizing and centre
cropping, at the model's input size, so a sweep decodes each image once instead of once per run.

Entries are ``.npy`` files (read with ``allow_pickle=False``: nothing is ever unpickled) holding what
``EvalTransform.prepare`` returns: uint8 for 8-bit sources (1 channel for grey images, 50 KB at 224 px),
float32 for deeper ones (DICOM, 16-bit PNG, NIfTI), so normalising a cached entry gives the transform's
output bit for bit. The key is a hash of the file's *content* (plus frame/slice index, the reader version and
the transform's geometry): renamed or copied files hit, an edited file misses, and runs on different
machines sharing a cache folder agree. Mean/std are applied after the cache, so CLIP and BiomedCLIP at
224 px share entries.

Every entry is verified on read: beside ``<key>.npy`` a sidecar ``<key>.sha256`` records the sha256 of the
entry key followed by the entry's bytes, written when the entry is. An entry that was edited, truncated, or
swapped with another (the digest names its key, so moving the sidecar along does not help) fails the check and
is recomputed from the source image, with one warning per process; an entry without a sidecar (written by an
older version) is recomputed silently. The digest is not a signature: someone who can write the cache folder
and recomputes the digest on purpose is not stopped, so keep the cache in a folder only you can write (the
default is under your home) or pass ``--cache-dir off`` for evaluations you report.

The cache holds pixel data (no DICOM tags); it lives under the user cache (``$MEDCLIPSVD_CACHE/eval``, else
``~/.cache/medclipsvd/eval``) unless ``--cache-dir`` says otherwise, and ``--cache-dir off`` disables it."""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np

from medclipsvd.data.dataset import CACHE_VERSION, ImageDataset
from medclipsvd.data.readers.dispatch import read_image
from medclipsvd.data.transforms import EvalTransform
from medclipsvd.data.types import NPZ_KEY_SEP, Sample

OFF = ("off", "none", "false", "0", "")
_DIGESTS: dict[tuple[str, int, int], str] = {}   # (file, size, mtime_ns) -> content hash, per process
DIGEST_SUFFIX = ".sha256"
_warned = False   # one warning per process about entries that failed their check


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


def entry_digest(key: str, data: bytes) -> str:
    """sha256 of the key then the entry's bytes: binds the content to the entry it was written as."""
    return hashlib.sha256(key.encode("ascii") + b"\0" + data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


class PreprocessedDataset(ImageDataset):
    """``ImageDataset`` for evaluation whose items come from the preprocessed cache in ``folder``;
    misses are decoded, prepared, written (atomically: DataLoader workers, Ray tasks and Slurm jobs may
    share the folder) and returned. Same items as ``ImageDataset(samples, transform, cache=False)``.
    ``rejected`` counts entries present on disk that failed their digest check (recomputed)."""

    def __init__(self, samples: list[Sample], transform: EvalTransform, folder: str | os.PathLike):
        super().__init__(samples, transform, cache=False)
        self.cache_folder = Path(folder)  # not ImageDataset.folder: that one holds decoded full-size images
        self.cache_folder.mkdir(parents=True, exist_ok=True)
        self.rejected = 0

    def _cached(self, key: str, path: Path) -> np.ndarray | None:
        """The entry if it is on disk and matches its recorded digest, else None (a mismatch is warned once)."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            recorded = path.with_suffix(DIGEST_SUFFIX).read_text().strip()
        except (OSError, ValueError):
            return None  # written by a version without digests: recomputed, not reported
        if recorded == entry_digest(key, data):
            try:
                return np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError:
                pass
        self.rejected += 1
        global _warned
        if not _warned:
            _warned = True
            warnings.warn(f"evaluation cache {self.cache_folder}: entry {path.name} does not match its recorded "
                          "digest (changed on disk after it was written); recomputing such entries from the source "
                          "images. Delete the folder if this keeps happening, or pass --cache-dir off.",
                          UserWarning, stacklevel=2)
        return None

    def _prepared(self, i: int) -> np.ndarray:
        s = self.samples[i]
        key = entry_key(s, self.transform)
        path = self.cache_folder / key[:2] / f"{key}.npy"
        arr = self._cached(key, path) if path.exists() else None
        if arr is not None:
            self.hits += 1
            return arr
        self.misses += 1
        arr = self.transform.prepare(read_image(s.path, s.index))
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        data = buf.getvalue()
        try:  # a full or read-only disk only costs decoding time
            path.parent.mkdir(parents=True, exist_ok=True)
            # entry first, then its digest: a reader in between finds the previous digest of the same key,
            # which matches (prepare is deterministic), or none, and recomputes
            _write_atomic(path, data)
            _write_atomic(path.with_suffix(DIGEST_SUFFIX), entry_digest(key, data).encode("ascii"))
        except OSError:
            pass
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
