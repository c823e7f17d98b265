"""Data problems that no single file shows: duplicated rows, the same image in train and in val/test,
class names a reader cannot tell apart (case, spacing, invisible characters, look-alike letters), a dataset
with one class, an empty test split, a class with no training images.

What a user would expect decides error or warning. For your own (custom) data, a train/test overlap by
path, near-duplicate class names and a single class are errors: each silently inflates or fakes the
results. For every dataset, fewer than two classes with usable entries refuses the load, and an empty
test split (or, for custom data, a class with no train entry) fails ``data check`` and every run before
training (``split_issues``). A run that trains refuses a class with no image in its few-shot train set
(``check_run_data``; a warning with --allow-missing). Duplicated rows are counted once, with a warning.
Identical file contents in train and val/test are a warning (copies can be deliberate, but usually they
leak). Registry datasets keep their published splits: anything else found there is a warning and a note
in the check report."""
from __future__ import annotations

import os
import warnings
from collections import defaultdict

from medclipsvd.data.types import NPZ_KEY_SEP
from medclipsvd.errors import DataError
from medclipsvd.io.hashing import sha256_file


def _warn(message: str, notes: list[str]) -> None:
    notes.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def check_classnames(classnames: list[str], source: str) -> list[str]:
    """Custom data: at least two classes, and no two names a reader cannot tell apart (equal up to case,
    spacing, invisible characters, accents or look-alike letters: ``classnames.skeleton``). Returns the
    names as the classes are known from then on (``classnames.clean``); a name mixing Latin letters with
    Cyrillic/Greek look-alikes is kept, with a warning."""
    from medclipsvd.data.classnames import clean, look_alike_letters, skeleton, why_alike

    if len(classnames) < 2:
        found = f"only the class {classnames[0]!r}" if classnames else "no class"
        raise DataError(f"{source}: {found} found; classification needs at least two classes (a one-class "
                        f"dataset trains to a meaningless 100 %). Add the other class folders or labels.")
    seen: dict[str, str] = {}
    for c in classnames:
        other = seen.setdefault(skeleton(c), c)
        if other != c:
            raise DataError(f"{source}: class names {other!r} and {c!r} {why_alike(other, c)} and would become "
                            f"two classes; rename one so they match (or make them clearly different).")
    for c in classnames:
        odd = look_alike_letters(c)
        if odd:
            warnings.warn(f"{source}: class name {c!r} mixes Latin letters with look-alike {', '.join(odd)}; "
                          f"the prompt will not read as the word it looks like - retype the name.", UserWarning,
                          stacklevel=2)
    return [clean(c) for c in classnames]


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


def _names(classnames: list[str], labels) -> str:
    return ", ".join(repr(classnames[l]) if 0 <= l < len(classnames) else f"<label {l}>" for l in sorted(labels))


def _empty_test(source: str, custom: bool, why: str = "") -> str:
    fix = ("Add test entries (a 'test' split value or test/ folder, or test items in the split file), or leave "
           "the split to be computed" if custom else
           "Restore the dataset's test images and its published split file (docs/datasets.md)")
    return (f"{source}: the test split is empty{why}; every run is scored on test, so a run would train and then "
            f"have nothing to evaluate. {fix}.")


def split_issues(listed: list, kept: list, classnames: list[str], source: str,
                 custom: bool) -> tuple[list[str], list[str]]:
    """What no single file shows about the splits as a whole, as ``(issues, gaps)``.

    Issues make the data no classification task at all, and refuse the load: fewer than two classes among
    the usable entries (one class trains and tests to a meaningless 100 %). Gaps make ``data check`` fail
    and every run refuse before training, while a loaded dataset still serves other uses (a train-only
    load, zero-shot scoring): an empty test split and, for custom data, a class with no train entry (it
    would be scored but never learnt). ``listed``: the entries as listed; ``kept``: those that passed."""
    issues, gaps = [], []
    present = {e.label for e in kept}
    if len(present) < 2:
        found = f"only the class {_names(classnames, present)} has" if present else "no class has"
        issues.append(f"{source}: {found} usable entries; classification needs at least two classes (one class "
                      f"trains and tests to a meaningless 100 %). Add the other classes' entries, or fix the "
                      f"labels of the split file.")
    if not any(e.split == "test" for e in kept):
        failed = any(e.split == "test" for e in listed)
        gaps.append(_empty_test(source, custom, " (all of its entries failed the checks)" if failed else ""))
    if custom:
        trained = {e.label for e in listed if e.split == "train"}
        absent = [l for l in range(len(classnames)) if l not in trained]
        if absent and len(present) >= 2:
            gaps.append(f"{source}: class(es) {_names(classnames, absent)} have no train entries; a trained model "
                        f"would be scored on classes it never saw. Add train images for them (or move some of "
                        f"their images to train).")
    return issues, gaps


def require_test_split(splits) -> None:
    """A run's dataset has test images: refused before any model is built or trained."""
    if not splits.test:
        custom = getattr(splits.info, "suite", "") == "custom"
        raise DataError(_empty_test(splits.meta.get("source") or splits.name, custom) +
                        " `medclipsvd data check` shows the per-class counts.")


def check_run_data(few, eval_sets: dict, name: str, trains: bool, allow_missing: bool) -> None:
    """Before training: every class of a training run has at least one image in its few-shot train set (after
    undecodable images were dropped), and every evaluation set has an image. A class without images is an
    error naming it, or with ``allow_missing`` a warning (the run then learns nothing of that class)."""
    for label, (samples, _) in eval_sets.items():
        if not samples:
            raise DataError(f"{name}: the {label} set to evaluate on is empty (no usable images); the run would "
                            f"train and then have nothing to score. Add {label} images, and check them with "
                            f"`medclipsvd data check`.")
    if not trains:
        return
    seen = {s.label for s in few.train}
    absent = [l for l in range(len(few.classnames)) if l not in seen]
    if not absent:
        return
    where = (few.meta or {}).get("source") or name  # the split file, CSV or folder the classes came from
    msg = (f"{where}: class(es) {_names(few.classnames, absent)} have no image in the few-shot train set; the "
           f"model would be scored on classes it never learnt")
    if not allow_missing:
        raise DataError(msg + ". Add train images for them (`medclipsvd data check` shows the per-class counts), "
                              "or pass --allow-missing to train without them (warned).")
    warnings.warn(msg + " (--allow-missing: training without them; their test results measure the base "
                        "model alone).", UserWarning, stacklevel=2)
