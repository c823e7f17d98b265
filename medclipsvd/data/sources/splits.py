"""Splits of custom (hospital) data: the seeded split that keeps every patient in one split, and the split
file in the benchmark format (plus a ``meta`` block) that makes later runs read exactly the same split."""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from medclipsvd.data.checks import RawEntry
from medclipsvd.data.sources.layouts import Listing, classnames_from_entries, read_split_json
from medclipsvd.data.types import SPLITS
from medclipsvd.data.volumes.policy import InputPolicy
from medclipsvd.errors import DataError


DEFAULT_FRACTIONS = (0.5, 0.2, 0.3)  # roughly the benchmark splits' train/val/test proportions


def grouped_stratified_split(labels: list[int], groups: list[str], fractions=DEFAULT_FRACTIONS,
                             seed: int = 0, splits=SPLITS) -> list[str]:
    """Assign each item to a split so that a group (patient) never spans two splits, each class is spread
    over the splits in ``fractions``, and the result depends only on (items, fractions, seed).

    Each group is stratified by its most common label; within a class, groups are shuffled by a seeded
    generator and each goes to the split furthest below its target image count."""
    fr = np.asarray(fractions, dtype=float)
    if len(fr) != len(splits) or (fr < 0).any() or fr.sum() <= 0:
        raise DataError(f"fractions {tuple(fractions)} must be {len(splits)} non-negative numbers")
    fr = fr / fr.sum()
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    strata: dict[int, list[str]] = defaultdict(list)
    for g, idx in by_group.items():
        if len(idx) == 1:  # most groups of a CSV without patient ids: one file each
            strata[labels[idx[0]]].append(g)
            continue
        counts = Counter(labels[i] for i in idx)
        most = max(counts.values())
        strata[min(l for l, c in counts.items() if c == most)].append(g)
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    for label in sorted(strata):
        gs = sorted(strata[label])
        order = rng.permutation(len(gs))
        total = sum(len(by_group[g]) for g in gs)
        # Python floats, not 3-element numpy arrays: the same float64 arithmetic (so the same splits), without
        # numpy's per-call cost on every one of 200,000 groups
        target = (fr * total).tolist()
        got = [0.0] * len(splits)
        for j in order.tolist():
            g = gs[j]
            gaps = [t - x for t, x in zip(target, got)]
            k = gaps.index(max(gaps))  # ties -> the earlier split (as np.argmax)
            got[k] += len(by_group[g])
            for i in by_group[g]:
                out[i] = splits[k]
    return out


def assign_splits(items, seed: int, fractions) -> list[str]:
    """Given splits are kept; missing ones are carved from the train pool (or from everything)."""
    given = {s for s, *_ in items if s}
    labels_all = sorted({it[2] for it in items})
    lab = {c: i for i, c in enumerate(labels_all)}
    # no id: a file (or a volume, with all its planes) is its own patient
    groups = [it[3] if it[3] is not None else f"__file__{it[1]}" for it in items]
    result = [s or "" for s, *_ in items]
    if not given:
        pool = list(range(len(items)))
        carve = list(SPLITS)
    else:
        carve = [s for s in SPLITS if s not in given]
        if not carve:
            return result
        if "train" not in given:
            raise DataError(f"split folders/values {sorted(given)} given without 'train'; give train (and "
                            f"optionally val/test) or none at all.")
        carve = ["train"] + carve
        pool = [i for i, (s, *_) in enumerate(items) if s == "train"]
    fr = [dict(zip(SPLITS, fractions))[s] for s in carve]
    sub = grouped_stratified_split([lab[items[i][2]] for i in pool], [groups[i] for i in pool], fr, seed, carve)
    for i, s in zip(pool, sub):
        result[i] = s
    return result


def check_patient_leak(items, splits: list[str], source: str) -> None:
    where: dict[str, set[str]] = defaultdict(set)
    for (_, _, _, pid, *_), s in zip(items, splits):
        if pid is not None:
            where[pid].add(s)
    leaks = sorted(p for p, ss in where.items() if len(ss) > 1)
    if leaks:
        raise DataError(f"{source}: {len(leaks)} patient id(s) appear in more than one split (first: "
                        f"{leaks[0]!r}); images of one patient must stay in one split, or results leak. Fix the "
                        f"split column, or leave it empty for a patient-grouped split.")


def write_split_json(entries, classnames: list[str], path: Path, base: Path, meta: dict | None = None) -> Path:
    """Write entries (``RawEntry`` or ``Sample`` with a split) in the benchmark format
    ``{"train": [[relpath, label, classname], ...], ...}``; a frame/slice index becomes a 4th element
    ``{"index": k}``. ``meta`` records the class list (label order) and how the split was made.
    Patient ids are not written: a pseudonym numbered within the file (``{"patient": "p3"}``) keeps the
    grouping, so a run on the file still counts K in patients and reports per-patient study metrics."""
    out = {s: [] for s in SPLITS}
    pseudonyms: dict[str, str] = {}
    for e in entries:
        rel = os.path.relpath(e.path, base)
        item = [Path(rel).as_posix(), e.label, e.classname]
        extra = {}
        if e.index is not None:
            extra["index"] = e.index
        if getattr(e, "patient_id", None) is not None:
            extra["patient"] = pseudonyms.setdefault(e.patient_id, f"p{len(pseudonyms) + 1}")
        if getattr(e, "view", None):
            extra["volume"] = True
        if extra:
            item.append(extra)
        out[e.split].append(item)
    out["meta"] = {"created_by": "medclipsvd", "classnames": list(classnames), **(meta or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    from medclipsvd.io import write_text

    write_text(path, json.dumps(out, indent=1))
    return path


def read_custom_split(path: Path, base: Path, opts: InputPolicy | None = None) -> Listing:
    opts = opts or InputPolicy()
    data = read_split_json(path)
    from medclipsvd.io.safeload import load_json

    meta = load_json(path, max_bytes=None).get("meta", {})  # read_split_json accepted it: an object
    for key in ("slices", "axis"):
        if key in meta and meta[key] != getattr(opts, key):
            raise DataError(f"{path}: was written with --{key} {meta[key]}, but this run asks for --{key} "
                            f"{getattr(opts, key)}; pass --{key} {meta[key]}, or write a new split file.")
    classnames = meta.get("classnames") or classnames_from_entries(data)
    entries, where = [], defaultdict(set)
    for split in SPLITS:
        for item in data[split]:
            extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            pid = None if extra.get("patient") is None else str(extra["patient"])
            if pid is not None:
                where[pid].add(split)
            entries.append(RawEntry(split, str(base / item[0]), item[1], str(item[2]), extra.get("index"),
                                    pid, item[0], opts.view if extra.get("volume") else None))
    leaks = sorted(p for p, ss in where.items() if len(ss) > 1)
    if leaks:
        raise DataError(f"{path}: {len(leaks)} patient(s) appear in more than one split (first: {leaks[0]!r} in "
                        f"{' and '.join(s for s in SPLITS if s in where[leaks[0]])}); images of one patient must "
                        f"stay in one split, or results leak. Write a new file with `medclipsvd data split`.")
    return Listing(classnames, entries, str(path), notes=[f"split read from {path}"])
