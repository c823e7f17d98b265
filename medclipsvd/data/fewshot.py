"""Few-shot subsets and base/new class splits."""
from __future__ import annotations

import math
import random
import warnings
from collections import defaultdict
from dataclasses import replace

import numpy as np

from medclipsvd.data.types import DatasetSplits, Sample
from medclipsvd.errors import DataError

_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def _by_label_first_seen(items: list[Sample]) -> dict[int, list[Sample]]:
    # dicts keep insertion order: classes come in order of first appearance, as the reference's tracker does
    groups: dict[int, list[Sample]] = defaultdict(list)
    for s in items:
        groups[s.label].append(s)
    return groups


def _draw(items: list[Sample], k: int, pick, name: str, label: int, split: str) -> list[Sample]:
    if len(items) >= k:
        return pick("sample", items, k)
    warnings.warn(f"{name}: class {label} has {len(items)} {split} items, fewer than K={k}; sampling with "
                  f"replacement (the reference rule), so some items repeat.", UserWarning, stacklevel=3)
    return pick("choices", items, k)


def is_patient_level(splits: DatasetSplits) -> bool:
    """Hospital data (patient ids or volume samples): few-shot K counts patients/studies, not images."""
    return any(s.patient_id is not None or s.view for sp in ("train", "val") for s in splits.split(sp))


def _sample_patients(splits: DatasetSplits, k: int, seed: int) -> DatasetSplits:
    """K patients/studies per class (``Sample.study``) from train, min(K, 4) from val, with all of each
    chosen patient's samples (every series and slice: the few-shot budget is patients, and a patient's
    images are not independent draws). One ``random.Random(seed)`` stream over sorted study keys."""
    rng = random.Random(seed)
    out = {}
    for split, n in (("val", min(k, 4)), ("train", k)):
        items = splits.split(split)
        by_class: dict[int, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
        for s in items:
            by_class[s.label][s.study].append(s)
        chosen: list[Sample] = []
        for label in sorted(by_class):
            studies = sorted(by_class[label])
            if len(studies) < n:
                if split == "train":  # a small val set is normal; a train class below K changes the experiment
                    warnings.warn(f"{splits.name}: class {label} has {len(studies)} {split} patient(s), fewer than "
                                  f"K={n}; all of them are used.", UserWarning, stacklevel=3)
                picked = studies
            else:
                picked = rng.sample(studies, n)
            for st in picked:
                chosen += by_class[label][st]
        out[split] = chosen
    meta = {**splits.meta, "few_shot": {"k": k, "seed": seed, "unit": "patient",
                                        # per class: one id under two labels is two draws of the budget
                                        "patients": {sp: len({(s.label, s.study) for s in out[sp]}) for sp in out}}}
    return splits.replace(train=out["train"], val=out["val"], meta=meta)


def sample_few_shot(splits: DatasetSplits, k: int, seed: int, reference_order: bool = True,
                    by_patient: bool | None = None) -> DatasetSplits:
    """K items per class from train and min(K, 4) from val; test is left untouched.

    ``by_patient`` (default: automatic, on for hospital data with patient ids or volume samples): K counts
    patients/studies per class and every sample of a chosen patient is used (``_sample_patients``).

    ``reference_order=True`` reproduces the reference's sequence: one ``random.Random(seed)`` stream, val
    sampled first, then train, each class in order of first appearance in the split, ``random.sample``
    (``random.choices`` with a warning when a class has fewer than K items). Python's Mersenne Twister and
    these two functions give the same draws on every machine for a given Python version and input order.
    ``reference_order=False``: train and val drawn independently, each class from its own NumPy PCG64
    generator seeded by (seed, split, label) over the items sorted by path, so a class's draw does not
    depend on other classes or on the listing order."""
    if k < 1:
        raise DataError(f"few-shot K must be >= 1, got {k}")
    if by_patient or (by_patient is None and is_patient_level(splits)):
        return _sample_patients(splits, k, seed)
    if reference_order:
        rng = random.Random(seed)

        def make_pick(split, label):
            def pick(how, items, n):
                return rng.sample(items, n) if how == "sample" else rng.choices(items, k=n)
            return pick
    else:
        def make_pick(split, label):
            g = np.random.default_rng([seed, _SPLIT_CODE[split], label])

            def pick(how, items, n):
                items = sorted(items, key=lambda s: (s.path, s.index if s.index is not None else -1))
                idx = g.choice(len(items), size=n, replace=(how == "choices"))
                return [items[i] for i in idx]
            return pick

    out = {}
    for split, n in (("val", min(k, 4)), ("train", k)):  # val first: the reference's order
        chosen: list[Sample] = []
        groups = _by_label_first_seen(splits.split(split))
        absent = [splits.classnames[c] for c in range(len(splits.classnames)) if c not in groups]
        if absent and splits.split(split):
            warnings.warn(f"{splits.name}: no {split} items for class(es) {absent}; the few-shot {split} set "
                          f"lacks them (a partial data root?).", UserWarning, stacklevel=2)
        for label, items in groups.items():
            chosen += _draw(items, n, make_pick(split, label), splits.name, label, split)
        out[split] = chosen
    meta = {**splits.meta, "few_shot": {"k": k, "seed": seed, "reference_order": reference_order}}
    return splits.replace(train=out["train"], val=out["val"], meta=meta)


def base_new_labels(num_classes: int) -> tuple[list[int], list[int]]:
    """Base = the first ceil(C/2) labels, new = the rest (the reference's rule)."""
    m = math.ceil(num_classes / 2)
    return list(range(m)), list(range(m, num_classes))


def split_base_new(splits: DatasetSplits, subset: str) -> DatasetSplits:
    """Keep the base or new classes of every split; new classes are relabelled 0..m-1."""
    if subset == "all":
        return splits
    if subset not in ("base", "new"):
        raise DataError(f"subset (--subsample) must be 'base', 'new' or 'all', not {subset!r}")
    base, new = base_new_labels(len(splits.classnames))
    keep = base if subset == "base" else new
    relabel = {old: i for i, old in enumerate(keep)}
    names = [splits.classnames[i] for i in keep]

    def sub(items: list[Sample]) -> list[Sample]:
        return [replace(s, label=relabel[s.label]) for s in items
                if s.label in relabel]

    return splits.replace(classnames=names, train=sub(splits.train), val=sub(splits.val), test=sub(splits.test),
                          meta={**splits.meta, "subset": subset, "label_map": {v: k for k, v in relabel.items()}})
