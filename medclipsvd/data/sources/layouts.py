"""Listing a dataset's entries from its on-disk layout (one function per layout kind, driven by the
registry). Listing never opens images; ``checks.run_checks`` does."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medclipsvd.data.checks import RawEntry
from medclipsvd.data.limits import read_list_text
from medclipsvd.data.registry import DatasetInfo, Layout
from medclipsvd.data.types import NPZ_KEY_SEP, SPLITS
from medclipsvd.errors import DataError


@dataclass
class Listing:
    classnames: list[str]
    entries: list[RawEntry]
    source: str
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)  # (split, kind, path, reason)
    notes: list[str] = field(default_factory=list)
    series: list = field(default_factory=list)  # selection.Fate rows of custom data: what `data check` tabulates
    # the RootGuard that already confined every entry while listing (a CSV, a folder scan): load_dataset does
    # not check the same entries twice under the same guard
    confined_by: object = None


def _dataset_dir(root: Path, layout: Layout, marker: str | None) -> Path | None:
    """``<root>/<dir>`` or ``root`` itself, whichever holds ``marker`` (or exists, without one)."""
    cands = ([root / layout.dir] if layout.dir else []) + [root]
    for c in cands:
        if (marker and (c / marker).exists()) or (not marker and c.is_dir() and c != root):
            return c
    return None


def find_layout(info: DatasetInfo, root: Path, split_file: str | None) -> tuple[Layout, Path]:
    """The first registry layout whose files are under ``root`` (``split_file`` forces split_json)."""
    looked = []
    for layout in info.layouts:
        marker = {"split_json": layout.split_file, "fgvc_txt": "variants.txt",
                  "imagenet_folders": layout.classnames_file, "medmnist_npz": layout.npz_file}.get(layout.kind)
        if layout.kind == "split_json" and split_file:
            d = _dataset_dir(root, layout, None) or root
            return layout, d
        if layout.kind == "medmnist_npz":
            if root.is_file() and root.name.lower() == layout.npz_file.lower():
                return layout, root.parent
            cands = [root, root / info.name] + ([root / layout.dir] if layout.dir else [])
            for c in cands:
                if (c / layout.npz_file).is_file():
                    return layout, c
            looked.append(str(root / layout.npz_file))
            continue
        if layout.kind in ("imagenet_numbered", "imagenet_variant"):
            d = _dataset_dir(root, layout, layout.image_dir)
            if d is not None:
                return layout, d
            looked.append(str(root / (layout.dir or "") / (layout.image_dir or "")))
            continue
        d = _dataset_dir(root, layout, marker)
        if d is not None:
            return layout, d
        looked.append(str(root / (layout.dir or "") / (marker or "")))
    where = info.download or info.source or "docs/datasets.md"
    raise DataError(f"{info.name}: no data found under {root}. Looked for: {'; '.join(looked)}. "
                    f"Pass the folder that holds the dataset's folder (e.g. data/ holding data/{info.layouts[0].dir or info.name}/); "
                    f"get the data from {where} and arrange it as docs/datasets.md describes.")


def read_split_json(path: Path) -> dict[str, list[list]]:
    """Parse a benchmark/CoOp split file (``{"train": [[relpath, label, classname], ...], ...}``). A label is
    a class index (an integer, not a boolean) or a class name."""
    from medclipsvd.data.limits import SPLIT_BYTES_ENV, check_list_file
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_json

    try:
        check_list_file(path, "split file", SPLIT_BYTES_ENV)  # a FIFO, /dev/zero or a huge file: before reading
        data = load_json(path, max_bytes=None)  # UTF-8, bounded depth (size above, entry counts below)
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found.") from None
    except FileFormatError as exc:
        raise DataError(f"{path}: {exc.problem}; re-download or rewrite the split file.") from None
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise DataError(f"{path}: expected an object with 'train', 'val' and 'test' lists.")
    out = {}
    for split in SPLITS:
        items = data.get(split, [])
        if not isinstance(items, list):
            raise DataError(f"{path}: '{split}' must be a list of [relative_path, label, classname].")
        for i, item in enumerate(items):
            if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)):
                raise DataError(f"{path}: {split}[{i}] is {item!r}; expected [relative_path, label, classname].")
        out[split] = items
    _check_entry_count(path, out)
    _check_labels(path, out)
    return out


def _check_labels(path: Path, data: dict[str, list]) -> None:
    """Label types are checked here, before anything is built from them: ``true`` would count as class 1
    (a boolean is an int in Python). Integers out of range are counted per class by the checks
    (``checks._valid_label``), which report every such entry at once."""
    for split, items in data.items():
        for i, item in enumerate(items):
            label = item[1]
            if (isinstance(label, int) and not isinstance(label, bool)) or (isinstance(label, str) and label.strip()):
                continue
            shown = repr(label) if len(repr(label)) <= 40 else repr(label)[:37] + "..."
            raise DataError(f"{path}: {split}[{i}] has label {shown}; a label is a class index (an integer from 0, "
                            f"not true/false) or a class name. Fix the entry, or write a new split file with "
                            f"`medclipsvd data split`.")


def _check_entry_count(path: Path, data: dict[str, list]) -> None:
    from medclipsvd.data.limits import SPLIT_ENTRIES_ENV, entry_limit, too_many

    n, limit = sum(len(v) for v in data.values()), entry_limit(SPLIT_ENTRIES_ENV)
    if n > limit:
        raise too_many(path, "split file", f"{n:,}", limit, SPLIT_ENTRIES_ENV)


def classnames_from_entries(split_data: dict[str, list[list]]) -> list[str]:
    """Label order from the file itself: the first classname seen for each label 0..C-1."""
    names: dict[int, str] = {}
    # a file of N entries names at most N classes: a larger label (10**30) is reported as outside the class
    # list by the checks instead of becoming a list of that many names here
    bound = sum(len(split_data.get(split, [])) for split in SPLITS)
    for split in SPLITS:
        for item in split_data.get(split, []):
            if isinstance(item[1], int) and not isinstance(item[1], bool) and 0 <= item[1] < bound:
                names.setdefault(item[1], str(item[2]))
    n = max(names) + 1 if names else 0
    return [names.get(i, f"<unnamed {i}>") for i in range(n)]


def list_split_json(info: DatasetInfo, layout: Layout, ddir: Path, split_file: str | None) -> Listing:
    sf = Path(split_file) if split_file else ddir / layout.split_file
    data = read_split_json(sf)
    classnames = info.classnames or classnames_from_entries(data)
    base = ddir / layout.image_dir if layout.image_dir else ddir
    entries = []
    for split in SPLITS:
        for item in data[split]:
            rel, label, cname = item[0], item[1], str(item[2])
            pid = str(item[3]) if len(item) > 3 and item[3] is not None else None
            entries.append(RawEntry(split, str(base / rel), label, cname, None, pid, rel))
    return Listing(classnames, entries, str(sf))


def list_fgvc(info: DatasetInfo, layout: Layout, ddir: Path) -> Listing:
    classnames = [l.strip() for l in read_list_text(ddir / "variants.txt", "class list").splitlines() if l.strip()]
    lookup = {c: i for i, c in enumerate(classnames)}
    entries = []
    for split in SPLITS:
        f = ddir / f"images_variant_{split}.txt"
        if not f.exists():
            raise DataError(f"{f}: FGVCAircraft split list not found; it ships with the official archive "
                            f"(fgvc-aircraft-2013b/data/).")
        for n, line in enumerate(read_list_text(f, "split list").splitlines()):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            rel = f"{image_id}.jpg"
            entries.append(RawEntry(split, str(ddir / layout.image_dir / rel), lookup.get(variant, -1), variant,
                                    listed_as=f"{f.name}:{n + 1} {rel}"))
    return Listing(classnames, entries, str(ddir / "variants.txt"))


def _read_classnames_txt(path: Path) -> dict[str, str]:
    """``wnid name`` per line (CRLF tolerated), file order kept."""
    out = {}
    for line in read_list_text(path, "class list").splitlines():
        line = line.strip()
        if line:
            wnid, _, name = line.partition(" ")
            out[wnid] = name.strip()
    return out


def _images_in(folder: Path) -> list[Path]:
    from medclipsvd.data.readers.formats import PIL_EXTS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PIL_EXTS
                  and not p.name.startswith("."))


def _classnames_file(ddir: Path, root: Path, layout: Layout) -> Path:
    for c in (ddir / (layout.classnames_file or "classnames.txt"), root / "imagenet" / "classnames.txt"):
        if c.exists():
            return c
    raise DataError(f"{ddir}: classnames.txt not found (also looked in {root / 'imagenet'}). It lists "
                    f"'wnid classname' per line; copy ImageNet's classnames.txt there (docs/datasets.md).")


def list_imagenet(info: DatasetInfo, layout: Layout, ddir: Path, root: Path) -> Listing:
    names = _read_classnames_txt(_classnames_file(ddir, root, layout))
    wnids = sorted(names)  # CoOp: labels follow the sorted folder order
    classnames = [names[w] for w in wnids]
    entries, problems = [], []
    for folder, splits in (("train", ("train",)), ("val", ("val", "test"))):
        for label, w in enumerate(wnids):
            d = ddir / layout.image_dir / folder / w
            if not d.is_dir():
                for s in splits:
                    problems.append((s, "missing", str(d), "class folder not found"))
                continue
            for p in _images_in(d):
                for s in splits:  # CoOp uses ImageNet's val folder as both val and test
                    entries.append(RawEntry(s, str(p), label, classnames[label]))
    return Listing(classnames, entries, str(ddir / layout.image_dir), problems,
                   notes=["ImageNet: val and test are both the official val folder (CoOp protocol)."])


def list_imagenet_variant(info: DatasetInfo, layout: Layout, ddir: Path, root: Path) -> Listing:
    names = _read_classnames_txt(_classnames_file(ddir, root, layout))
    img_root = ddir / layout.image_dir
    folders = sorted(d.name for d in img_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    entries, problems = [], []
    if layout.kind == "imagenet_numbered":  # ImageNetV2: folder i is ImageNet label i
        classnames = list(names.values()) if list(names) == sorted(names) else [names[w] for w in sorted(names)]
        for f in folders:
            if not f.isdigit() or not 0 <= int(f) < len(classnames):
                problems.append(("test", "mislabelled", str(img_root / f), "folder is not a label 0..999"))
                continue
            for p in _images_in(img_root / f):
                entries.append(RawEntry("test", str(p), int(f), classnames[int(f)]))
    else:  # Sketch / A / R: labels follow the sorted folders present, as the reference does
        known = [f for f in folders if f in names]
        for f in sorted(set(folders) - set(known)):
            problems.append(("test", "mislabelled", str(img_root / f), "folder is not an ImageNet wnid in classnames.txt"))
        classnames = [names[f] for f in known]
        for label, f in enumerate(known):
            for p in _images_in(img_root / f):
                entries.append(RawEntry("test", str(p), label, classnames[label]))
    return Listing(classnames, entries, str(img_root), problems)


def list_medmnist(info: DatasetInfo, layout: Layout, ddir: Path) -> Listing:
    from medclipsvd.data.readers.npz import npz_array

    file = ddir / layout.npz_file
    try:
        with np.load(file, allow_pickle=False) as z:
            keys = set(z.files)
    except Exception as exc:
        raise DataError(f"{file}: not a readable .npz ({type(exc).__name__}); re-download it from "
                        f"{info.source or 'medmnist.com'}.") from None
    if info.classnames is None:
        raise DataError(f"{info.name}: the registry lists no class names for the MedMNIST layout.")
    entries = []
    for split in SPLITS:
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in keys or lk not in keys:
            raise DataError(f"{file}: arrays {ik!r}/{lk!r} not found (has {sorted(keys)}); expected the MedMNIST "
                            f"v2 layout (train_images, train_labels, val_..., test_...).")
        labels = npz_array(str(file), lk)
        n_img = npz_array(str(file), ik).shape[0]
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise DataError(f"{file}: {lk} has shape {labels.shape}: multi-label MedMNIST sets are not "
                            f"supported (single-label classification only).")
        labels = labels.reshape(-1)
        if len(labels) != n_img:
            raise DataError(f"{file}: {n_img} {split} images but {len(labels)} labels.")
        path = f"{file}{NPZ_KEY_SEP}{ik}"
        for i, lab in enumerate(labels.tolist()):
            name = info.classnames[lab] if 0 <= lab < len(info.classnames) else f"<label {lab}>"
            entries.append(RawEntry(split, path, int(lab), name, i, listed_as=f"{file.name}::{ik}[{i}]"))
    return Listing(list(info.classnames), entries, str(file))


def list_layout(info: DatasetInfo, root: Path, split_file: str | None = None) -> Listing:
    layout, ddir = find_layout(info, root, split_file)
    if layout.kind == "split_json":
        return list_split_json(info, layout, ddir, split_file)
    if layout.kind == "fgvc_txt":
        return list_fgvc(info, layout, ddir)
    if layout.kind == "imagenet_folders":
        return list_imagenet(info, layout, ddir, root)
    if layout.kind in ("imagenet_numbered", "imagenet_variant"):
        return list_imagenet_variant(info, layout, ddir, root)
    if layout.kind == "medmnist_npz":
        return list_medmnist(info, layout, ddir)
    raise DataError(f"{info.name}: layout kind {layout.kind!r} has no reader")  # registry bug

