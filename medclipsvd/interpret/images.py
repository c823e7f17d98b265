"""Images for the head analysis: a plain folder (recursively) or a registered dataset split.

Files are decoded with `medclipsvd.data.read_image` when the data package provides it (DICOM, NIfTI,
16-bit PNG, ...), else with PIL. Only pixel data is used: no file metadata is read or logged.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from medclipsvd.interpret.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom",
                  ".nii", ".ppm", ".pgm"}


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    return not name.startswith(".") and (p.suffix.lower() in IMAGE_SUFFIXES or name.endswith(".nii.gz"))


@dataclass(frozen=True)
class ImageRef:
    path: str
    index: int | None = None      # frame / slice / array row for multi-image files
    view: str | None = None       # volumes (DICOM series, NIfTI): "slices|axis|window", see medclipsvd.data.volumes.views


def _data_reader() -> Callable | None:
    try:
        from medclipsvd.data import read_image  # the data engineer's reader (DICOM, NIfTI, ...)
    except ImportError:
        return None
    return read_image


def _read_pil(ref: ImageRef):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(ref.path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {ref.path}: {exc}. Remove the file from the folder or convert "
                        "it to PNG/JPEG") from None


def load_pil(ref: ImageRef):
    """The image as an RGB PIL image (what every backbone's eval preprocessing expects)."""
    reader = _data_reader()
    if reader is None:
        return _read_pil(ref)
    import numpy as np
    from PIL import Image

    if ref.view:
        from medclipsvd.data.volumes.views import read_view

        arr = read_view(ref.path, ref.index, ref.view)
    else:
        arr = reader(ref.path, index=ref.index)      # float32 HxWx3 in [0, 1]; DataError when unreadable
    return Image.fromarray((np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype("uint8"))


def _volume_refs(root: Path, volume: dict) -> tuple[list[ImageRef], set[str]]:
    """DICOM series and 3-D NIfTI under root as volume refs (planes by the slice policy) and their files."""
    from medclipsvd.data.volumes.policy import InputPolicy
    from medclipsvd.data.volumes.selection import scan_folder

    opts = InputPolicy.from_run(volume).validate()
    vols, _ = scan_folder(root)
    refs = [ImageRef(v.path, k, opts.view) for v in vols for k in opts.planes(v.path)]
    return refs, {f for v in vols for f in v.files}


def folder_images(folder: str | Path, max_images: int = 256, seed: int = 0,
                  volume: dict | None = None, follow_symlinks: bool = False) -> list[ImageRef]:
    """Up to `max_images` image files under `folder` (recursively), a seeded random subset if there are more.

    The folder is confined like a data root: every file and sub-folder is checked before anything is opened,
    and a symlink leading out of the folder is refused unless ``follow_symlinks`` (``--follow-symlinks``).
    ``volume`` (slices / window / axis): DICOM series and 3-D NIfTI files become volume images, as in training."""
    from medclipsvd.data.sources.confine import RootGuard

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"--images {folder}: not a folder. Pass a folder that contains image files "
                        "(PNG, JPEG, TIFF, DICOM, ...), searched recursively")
    listed = RootGuard.for_root(root, follow_symlinks).check_tree(root, source=f"--images {folder}")
    vol_refs, in_volumes = _volume_refs(root, volume) if volume is not None else ([], set())
    in_volumes |= {r.path for r in vol_refs}
    files = sorted(p for p in map(Path, listed) if _is_image(p) and str(p) not in in_volumes)
    if vol_refs:
        refs = vol_refs + [ImageRef(str(p)) for p in files]
        return sorted(random.Random(seed).sample(refs, max_images), key=lambda r: (r.path, r.index or -1)) \
            if len(refs) > max_images else refs
    if not files:
        raise DataError(f"--images {folder}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                        ".nii.gz recursively). Point --images at the folder holding the images")
    if len(files) > max_images:
        files = sorted(random.Random(seed).sample(files, max_images))
    return [ImageRef(str(p)) for p in files]


def dataset_images(name: str, data_root: str | Path, split: str = "test", max_images: int = 256,
                   seed: int = 0, volume: dict | None = None, follow_symlinks: bool = False) -> list[ImageRef]:
    """Up to `max_images` images of a dataset split, balanced over classes (round robin, seeded)."""
    try:
        from medclipsvd.data import load_dataset
    except ImportError:
        raise DataError("--pipeline needs the medclipsvd.data package (dataset registry), which is not "
                        "available in this installation; pass a folder of images with --images instead") from None
    splits = load_dataset(name, str(data_root), allow_missing=True, follow_symlinks=follow_symlinks,
                          **{k: v for k, v in (volume or {}).items() if v is not None})
    samples = list(getattr(splits, split, None) or [])
    if not samples:
        raise DataError(f"dataset {name} under {data_root} has no images in split {split!r}; choose another "
                        "--split (train, val, test) or check the data root")
    rng = random.Random(seed)
    by_class: dict[int, list] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    for group in by_class.values():
        rng.shuffle(group)
    picked = []
    while len(picked) < max_images and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(picked) < max_images:
                picked.append(by_class[label].pop())
    return [ImageRef(s.path, getattr(s, "index", None), getattr(s, "view", None)) for s in picked]


def batches(refs: list[ImageRef], preprocess: Callable, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Preprocessed image batches [B, 3, H, W], in order."""
    for start in range(0, len(refs), batch_size):
        yield torch.stack([preprocess(load_pil(r)) for r in refs[start:start + batch_size]])
