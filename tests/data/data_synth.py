"""Tiny synthetic data roots in the exact on-disk layouts of the registered datasets (8x8 images)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from medclipsvd.data.registry import DatasetInfo, Layout

SPLITS = ("train", "val", "test")
EXT = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpeg", "tif": ".tif", "npz": ".png"}


def write_image(path: Path, seed: int = 0, size: int = 8, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def class_names(info: DatasetInfo, fallback: int = 3) -> list[str]:
    return list(info.classnames) if info.classnames else [f"class {c}" for c in "abcdefgh"[:fallback]]


def make_split_json(root: Path, info: DatasetInfo, layout: Layout, per_class: int = 1) -> dict:
    ddir = root / layout.dir
    base = ddir / layout.image_dir if layout.image_dir else ddir
    ext = EXT.get(info.file_type or "png", ".png")
    split = {s: [] for s in SPLITS}
    n = 0
    for label, name in enumerate(class_names(info)):
        folder = name.replace(" ", "_").replace("/", "-")
        for s in SPLITS:
            for i in range(per_class):
                rel = f"{folder}/{s}{i}{ext}"
                write_image(base / rel, seed=n)
                n += 1
                split[s].append([rel, label, name])
    (ddir / layout.split_file).write_text(json.dumps(split))
    return split


def make_fgvc(root: Path, info: DatasetInfo, layout: Layout) -> None:
    ddir = root / layout.dir
    variants = ["707-320", "Boeing 737-200", "F/A-18"]  # real variants contain spaces and slashes
    (ddir).mkdir(parents=True, exist_ok=True)
    (ddir / "variants.txt").write_text("\n".join(variants) + "\n")
    n = 0
    for s in SPLITS:
        lines = []
        for v in variants:
            image_id = f"{1000000 + n:07d}"
            write_image(ddir / layout.image_dir / f"{image_id}.jpg", seed=n)
            lines.append(f"{image_id} {v}")
            n += 1
        (ddir / f"images_variant_{s}.txt").write_text("\n".join(lines) + "\n")


WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark", "n01491361": "tiger shark"}


def _classnames_txt(path: Path, wnids=WNIDS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{w} {n}\r\n" for w, n in wnids.items()).encode())  # CRLF like the real file


def make_imagenet(root: Path, info: DatasetInfo, layout: Layout) -> None:
    ddir = root / layout.dir
    _classnames_txt(ddir / layout.classnames_file)
    n = 0
    for folder in ("train", "val"):
        for w in WNIDS:
            write_image(ddir / layout.image_dir / folder / w / f"{w}_{n}.JPEG", seed=n, mode="RGB")
            n += 1


def make_imagenet_numbered(root: Path, info: DatasetInfo, layout: Layout) -> None:
    ddir = root / layout.dir
    _classnames_txt(ddir / "classnames.txt")
    for label in range(len(WNIDS)):
        write_image(ddir / layout.image_dir / str(label) / f"img{label}.jpeg", seed=label)


def make_imagenet_variant(root: Path, info: DatasetInfo, layout: Layout) -> None:
    ddir = root / layout.dir
    _classnames_txt(ddir / "classnames.txt")
    for n, w in enumerate(list(WNIDS)[1:]):  # a subset of classes present, as in ImageNet-A/R
        write_image(ddir / layout.image_dir / w / f"{n}.jpg", seed=n)


def make_medmnist(root: Path, info: DatasetInfo, layout: Layout, rgb: bool = False) -> dict:
    rng = np.random.default_rng(0)
    C = len(info.classnames)
    arrays, counts = {}, {}
    for i, s in enumerate(SPLITS):
        n = C + i  # every class at least once
        shape = (n, 8, 8, 3) if rgb else (n, 8, 8)
        arrays[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % C).reshape(-1, 1).astype(np.uint8)
        counts[s] = n
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / layout.npz_file, **arrays)
    return counts


def make_root(root: Path, info: DatasetInfo, layout_index: int = 0):
    """Build ``root`` for ``info`` in its ``layout_index``-th registry layout; return the layout kind."""
    layout = info.layouts[layout_index]
    maker = {"split_json": make_split_json, "fgvc_txt": make_fgvc, "imagenet_folders": make_imagenet,
             "imagenet_numbered": make_imagenet_numbered, "imagenet_variant": make_imagenet_variant,
             "medmnist_npz": make_medmnist}[layout.kind]
    maker(root, info, layout)
    return layout.kind
