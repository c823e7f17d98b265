"""Data problems that no single file shows: duplicated rows, the same image in train and in val/test,
class names that differ only in case or spacing, a dataset with one class.

What a user would expect decides error or warning. For your own (custom) data, a train/test overlap by
path, near-duplicate class names and a single class are errors: each silently inflates or fakes the
results. Duplicated rows are counted once, with a warning. Identical file contents in train and val/test
are a warning (copies can be deliberate, but usually they leak). Registry datasets keep their published
splits: anything found there is a warning and a note in the check report."""
from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict

from medclipsvd.data.types import NPZ_KEY_SEP
from medclipsvd.errors import DataError
from medclipsvd.io.hashing import sha256_file


def _warn(message: str, notes: list[str]) -> None:
    notes.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


def check_classnames(classnames: list[str], source: str) -> None:
    """Custom data: at least two classes, and no two names equal up to case, spaces and underscores."""
    if len(classnames) < 2:
        found = f"only the class {classnames[0]!r}" if classnames else "no class"
        raise DataError(f"{source}: {found} found; classification needs at least two classes (a one-class "
                        f"dataset trains to a meaningless 100 %). Add the other class folders or labels.")
    seen: dict[str, str] = {}
    for c in classnames:
        other = seen.setdefault(_norm(c), c)
        if other != c:
            raise DataError(f"{source}: class names {other!r} and {c!r} differ only in case or spacing and "
                            f"would become two classes; rename one so they match (or make them clearly "
                            f"different).")


def dedupe(entries: list, source: str, notes: list[str], custom: bool = False) -> list:
    """Drop repeated rows (same split, file, frame and label), with a warning that counts them. The same file
    listed under two different classes is an error for custom data (which label is right?)."""
    labels: dict[tuple, object] = {}
    out, dups, first = [], 0, None
    for e in entries:
        key = (e.split, e.path, e.index)
        if key in labels:
            if labels[key] == e.label:
                dups += 1
                first = first or (e.listed_as or e.path)
                continue
            if custom:
                raise DataError(f"{source}: {e.listed_as or e.path!r} is listed as two classes in {e.split} "
                                f"({labels[key]!r} and {e.label!r}); keep the row with the right label.")
        else:
            labels[key] = e.label
        out.append(e)
    if dups:
        _warn(f"{source}: {dups} duplicated row(s) (first: {first!r}) counted once; remove them from the list.",
              notes)
    return out


def check_path_overlap(entries: list, source: str, custom: bool, notes: list[str]) -> None:
    """The same file (and frame/slice) in train and in val or test: an evaluation leak."""
    train = {(e.path, e.index) for e in entries if e.split == "train"}
    leaks = [e for e in entries if e.split in ("val", "test") and (e.path, e.index) in train]
    if not leaks:
        return
    e = leaks[0]
    msg = (f"{source}: {len(leaks)} entr{'y' if len(leaks) == 1 else 'ies'} of val/test also in train (first: "
           f"{e.listed_as or e.path!r} in {e.split}); the evaluation would score images the model was trained on")
    if custom:
        raise DataError(msg + ". Keep each image in one split (fix the split column or the folders).")
    _warn(msg + " (the published split has this overlap).", notes)


def check_content_overlap(entries: list, source: str, notes: list[str], limit: int = 200_000) -> None:
    """Identical file contents in train and in val/test (a copied image). Files are grouped by size first,
    so only same-size candidates across the splits are hashed."""
    files = [e for e in entries if NPZ_KEY_SEP not in e.path and e.index is None]
    if not files or len(files) > limit:
        return
    by_size: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for e in files:
        try:
            size = os.path.getsize(e.path)
        except OSError:
            continue
        by_size[size]["train" if e.split == "train" else "eval"].add(e.path)
    pairs = 0
    example = None
    for groups in by_size.values():
        if not groups["train"] or not groups["eval"]:
            continue
        digests: dict[str, str] = {}
        for p in groups["train"]:
            try:
                digests.setdefault(sha256_file(p), p)
            except OSError:
                continue
        for p in sorted(groups["eval"]):
            try:
                d = sha256_file(p)
            except OSError:
                continue
            if d in digests and digests[d] != p:
                pairs += 1
                example = example or (digests[d], p)
    if pairs:
        _warn(f"{source}: {pairs} val/test file(s) have the same content as a train file (first: {example[1]!r} "
              f"= {example[0]!r}); remove the copies or keep them in one split, or results leak.", notes)
