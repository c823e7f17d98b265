"""Transforms from ``read_image`` output (float32 HxWx3 in [0, 1]) to a normalised [3, S, S] tensor.

Evaluation reproduces open_clip's eval preprocessing (Resize shorter side, bicubic, on a PIL image ->
CenterCrop -> ToTensor -> Normalize). Images that are exactly 8-bit (every PNG/JPEG, MedMNIST) go through
PIL in uint8, bit-identical to open_clip; deeper images (DICOM, 16-bit PNG, NIfTI) are resized per channel
as 32-bit float PIL images with the same filter, so no precision is thrown away.

Training follows the reference (RandomResizedCrop(S, scale=(0.08, 1)), bicubic, horizontal flip p=0.5)
with albumentations; the flip is left out where laterality matters (``DatasetInfo.hflip`` False)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _as_uint8_if_exact(img: np.ndarray) -> np.ndarray | None:
    """The image as uint8 if every value is k/255 (8-bit source), else None."""
    flat = img.reshape(-1)
    probe = flat[:: max(1, flat.size // 4096)] * np.float32(255.0)  # spread-out sample: deep images fail cheaply
    if np.abs(probe - np.rint(probe)).max(initial=0.0) >= 1e-3:
        return None
    out = np.empty(img.shape, np.uint8)
    dst = out.reshape(-1)
    step = 1 << 20  # in chunks: temporaries stay at a few MB however large the image (bounded memory)
    for i in range(0, flat.size, step):
        scaled = flat[i:i + step] * np.float32(255.0)
        q = np.rint(scaled)
        if np.abs(scaled - q).max(initial=0.0) >= 1e-3:
            return None
        dst[i:i + step] = q
    return out


class EvalTransform:
    """open_clip's eval preprocessing on a float image (picklable for DataLoader workers)."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)

    def signature(self) -> str:
        """What `prepare` depends on (the evaluation cache keys on it; mean/std apply after the cache)."""
        return f"eval-v1|size={self.image_size}|resize-shorter-bicubic|centre-crop|clip01"

    def prepare(self, img: np.ndarray) -> np.ndarray:
        """Resize + centre crop, before normalisation: uint8 [C, S, S] for 8-bit images, float32 in [0, 1]
        otherwise; C = 1 when the channels are equal (grey), else 3. `normalise(prepare(img))` is the
        transform's output, bit for bit."""
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        # Resizing/cropping via torchvision on PIL images (open_clip's exact ops); the arithmetic after it in
        # NumPy float32, which is bit-identical to ToTensor + Normalize and avoids torch's per-op thread
        # overhead (tens of ms per image on a busy machine).
        s = self.image_size
        u8 = _as_uint8_if_exact(img)
        if u8 is not None:
            pil = Image.fromarray(u8, mode="RGB")
            pil = TF.center_crop(TF.resize(pil, s, interpolation=InterpolationMode.BICUBIC), s)
            x = np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1)
        else:
            grey = np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2])
            chans = []
            for c in range(1 if grey else 3):  # grey (most DICOM/NIfTI): resize once, repeat
                ch = Image.fromarray(np.ascontiguousarray(img[:, :, c], dtype=np.float32), mode="F")
                ch = TF.center_crop(TF.resize(ch, s, interpolation=InterpolationMode.BICUBIC), s)
                chans.append(np.asarray(ch, dtype=np.float32))
            return np.clip(np.stack(chans), 0.0, 1.0)
        if np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2]):
            x = x[:1]
        return np.ascontiguousarray(x)

    def normalise(self, x: np.ndarray):
        """`prepare`'s output -> the normalised float32 [3, S, S] tensor."""
        import torch

        if x.dtype == np.uint8:
            x = x.astype(np.float32) / np.float32(255.0)
        if x.shape[0] == 1:
            x = np.repeat(x, 3, axis=0)
        x = (x - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def __call__(self, img: np.ndarray):
        return self.normalise(self.prepare(img))

    def reseed(self, seed: int) -> None:  # deterministic: nothing to reseed
        pass

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.image_size}, resize shorter side bicubic + centre crop + normalise)"


class TrainTransform:
    """RandomResizedCrop(scale 0.08-1, bicubic) [+ horizontal flip] + normalise, via albumentations."""

    def __init__(self, image_size: int, mean, std, hflip: bool = True, scale=(0.08, 1.0), seed: int | None = None):
        import os

        # albumentations otherwise asks PyPI for its latest version at import (seen as a DNS failure and a
        # warning on an offline GPU node): no network calls from a training run.
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        import albumentations as A
        import cv2

        self.image_size, self.hflip = int(image_size), bool(hflip)
        ops = [A.RandomResizedCrop(size=(self.image_size, self.image_size), scale=tuple(scale),
                                   ratio=(3 / 4, 4 / 3), interpolation=cv2.INTER_CUBIC)]
        if hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        ops.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0))
        self.pipeline = A.Compose(ops, seed=seed)
        self.mean, self.std = tuple(mean), tuple(std)

    def reseed(self, seed: int) -> None:
        """Restart the augmentation stream (albumentations keeps its own generator, unaffected by the
        global seeds); the trainer calls this per sample for reproducible, resumable runs."""
        self.pipeline.set_random_seed(int(seed))

    def __call__(self, img: np.ndarray):
        import torch

        out = self.pipeline(image=np.ascontiguousarray(img, dtype=np.float32))["image"]
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32))

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.image_size}, RandomResizedCrop(0.08-1, bicubic), hflip={self.hflip})"


def build_transform(image_size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, *,
                    train: bool, hflip: bool = True, scale: tuple[float, float] = (0.08, 1.0),
                    seed: int | None = None):
    """The eval (``train=False``) or training transform; see the module docstring.

    ``scale``: RandomResizedCrop area range (the reference's 0.08-1); ``seed`` seeds albumentations."""
    if train:
        return TrainTransform(image_size, mean, std, hflip=hflip, scale=scale, seed=seed)
    return EvalTransform(image_size, mean, std)
