"""What a run records about the data it trained and was tested on (MLflow dataset inputs), without patient data.

A record names the dataset and split, its source is the data root the user passed (the same folder the run's
`data_root` param shows), and its digest is a SHA-256 over the split file's bytes and the sorted list of the
split's samples (path relative to the data root, frame/slice index, label). File and folder names below the
data root (which in hospital exports often carry patient IDs) enter only that hash; they are never logged.
The profile holds counts per class. See docs/mlflow.md, "Privacy and safety"."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

DIGEST_CHARS = 32  # MLflow stores at most 36 characters of a digest


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:  # outside the root (e.g. an absolute path in a CSV): only its hash is kept anyway
        return Path(path).as_posix()


def dataset_record(name: str, context: str, samples: Iterable, classnames: list[str], data_root: str | os.PathLike,
                   split_file: str | os.PathLike | None = None) -> dict:
    """A JSON-able description of one split for `Tracker.log_dataset` (no file names in clear)."""
    root = Path(data_root).resolve()
    samples = list(samples)
    h = hashlib.sha256()
    if split_file is not None and Path(split_file).is_file():
        h.update(Path(split_file).read_bytes())
    for rel, index, label in sorted((_relative(s.path, root), -1 if s.index is None else int(s.index), int(s.label))
                                    for s in samples):
        h.update(f"{rel}\t{index}\t{label}\n".encode())
    counts = [0] * len(classnames)
    for s in samples:
        counts[s.label] += 1
    profile = {"num_samples": len(samples), "num_classes": len(classnames),
               "class_counts": dict(zip(classnames, counts))}
    return {"name": f"{name}-{context}", "digest": h.hexdigest()[:DIGEST_CHARS], "context": context,
            "source_type": "local", "source": json.dumps({"uri": root.as_uri()}), "profile": json.dumps(profile)}
