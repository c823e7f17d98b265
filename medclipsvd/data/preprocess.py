"""MONAI dictionary transforms as a user-declared preprocessing step.

A pipeline YAML may list MONAI dictionary transforms by name and arguments::

    preprocess:
      - name: ScaleIntensityRanged
        args: {a_min: 0.1, a_max: 0.9, b_min: 0.0, b_max: 1.0, clip: true}
      - name: RandGaussianNoised
        args: {prob: 0.5, std: 0.02}

They run on each decoded 2-D sample, as ``{"image": tensor [3, H, W]}`` with values in [0, 1] (what the
readers return: windowed CT, scaled MR, 8-bit images / 255), after the image cache and before the standard
resize / crop / normalise of the training and evaluation transforms, which stay the reference's.
``keys`` defaults to ``image``. The result may have 1 (repeated to RGB) or 3 channels. Random transforms
(MONAI ``Randomizable``: RandGaussianNoised, RandAffined, ...) are augmentation: they run in training only,
seeded per sample; evaluation, prediction and exported bundles apply the deterministic ones.

Only the transforms and arguments of the allow-list (preprocess_steps.py) are accepted: a list read from a
file is data and must not be able to name code. ``build_preprocess`` checks every step against it before
MONAI sees anything, then lets MONAI check the values (one-line ``PreprocessConfigError``). A transform that
fails on an image raises a one-line ``PreprocessError`` naming the transform, the file and the image.
MONAI is imported only when a preprocess list or a Compose is used (it costs seconds to import)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medclipsvd.data.preprocess_steps import IMAGE_KEY, PreprocessConfigError, check_step, validate_steps
from medclipsvd.errors import DataError

__all__ = ["IMAGE_KEY", "Preprocess", "PreprocessConfigError", "PreprocessError", "PreprocessedTransform",
           "as_preprocess", "build_preprocess", "build_step", "validate_steps", "with_preprocess"]


class PreprocessError(DataError):
    """A MONAI preprocess transform failed on an image at run time."""

    def __init__(self, what: str, detail: str, file: str | None = None):
        self.what, self.detail, self.file = what, detail, file
        super().__init__(str(self))

    def with_file(self, file: str) -> "PreprocessError":
        """The same error naming the image it failed on (added by the dataset, which knows the path)."""
        return self if self.file is not None else PreprocessError(self.what, self.detail, str(file))

    def __str__(self) -> str:
        return f"{self.what}{' on image ' + self.file if self.file else ''}: {self.detail}"


def _monai_transforms():
    import monai.transforms

    return monai.transforms


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0].rstrip(".") if text else ""
    return f"{type(exc).__name__}: {msg[:300]}" if msg else type(exc).__name__


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def build_step(name: str, args: dict, i: int = 0, source: str | None = None):
    """One allowed MONAI dictionary transform, its arguments checked against the allow-list first."""
    label = f"{source + ': ' if source else ''}preprocess step {i + 1}"
    args = check_step(name, args, label)  # before MONAI is imported: nothing of the step runs unchecked
    mt = _monai_transforms()
    cls = getattr(mt, name)
    if not (isinstance(cls, type) and issubclass(cls, mt.MapTransform)):  # the allow-list names only these
        raise PreprocessConfigError(f"{label} {name!r}: not a MONAI dictionary transform in this MONAI version")
    args.setdefault("keys", IMAGE_KEY)
    try:
        return cls(**args)
    except Exception as exc:  # the transform's own value checks (ranges, lengths, combinations)
        raise PreprocessConfigError(f"{label} {name!r}: the arguments were refused ({_first_line(exc)}); check "
                                    "their values against the MONAI documentation of the transform") from None


def build_preprocess(steps: Sequence, source: str | None = None) -> "Preprocess | None":
    """A ``Preprocess`` from YAML-style steps ([{"name", "args"}]); None when there are none. Every step is
    checked against the allow-list (all of them, before the first is built)."""
    steps = validate_steps(steps, source)
    if not steps:
        return None
    built = [(s["name"], build_step(s["name"], s["args"], i, source)) for i, s in enumerate(steps)]
    return Preprocess(built, source=source)


def as_preprocess(obj, source: str | None = None) -> "Preprocess | None":
    """None, a ``Preprocess``, a ``monai.transforms.Compose`` (or one MONAI transform) built in the caller's
    own Python code, or a list of steps (checked against the allow-list, as from a file)."""
    if obj is None or isinstance(obj, Preprocess):
        return obj
    if isinstance(obj, (list, tuple)):
        return build_preprocess(obj, source)
    mt = _monai_transforms()
    if isinstance(obj, mt.Compose):
        flat = obj.flatten().transforms
        return Preprocess([(type(t).__name__, t) for t in flat], source=source or "the given Compose")
    if callable(obj):
        return Preprocess([(type(obj).__name__, obj)], source=source or "the given transform")
    raise PreprocessConfigError(f"preprocess must be a monai.transforms.Compose or a list of "
                                f"{{name, args}} steps, got {type(obj).__name__}")


class Preprocess:
    """The declared MONAI transforms, applied one by one so a failure can name the transform."""

    def __init__(self, transforms: list[tuple[str, Any]], source: str | None = None):
        self.transforms = list(transforms)
        self.source = source

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.transforms]

    def for_eval(self) -> "Preprocess | None":
        """The deterministic transforms only (random ones are training augmentation); None if none are left."""
        from monai.transforms import Randomizable

        kept = [(n, t) for n, t in self.transforms if not isinstance(t, Randomizable)]
        return Preprocess(kept, source=self.source) if kept else None

    def set_random_state(self, seed: int) -> None:
        """Seed MONAI's randomisable transforms (each has its own generator, untouched by global seeds)."""
        for i, (_, t) in enumerate(self.transforms):
            if hasattr(t, "set_random_state"):
                t.set_random_state(seed=(int(seed) * 1009 + i) % (2 ** 32))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """float32 HxWx3 -> float32 HxWx3 (what the standard transforms take)."""
        import torch

        from monai.utils import convert_to_numpy

        data: Any = {IMAGE_KEY: torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))}
        for i, (name, t) in enumerate(self.transforms):
            try:
                data = t(data)
            except Exception as exc:
                raise PreprocessError(f"MONAI preprocess step {i + 1} ({name}){_where(self.source)} failed",
                                      f"{_first_line(exc)}; check its arguments") from None
            if not isinstance(data, dict) or IMAGE_KEY not in data:
                raise PreprocessError(f"MONAI preprocess step {i + 1} ({name}){_where(self.source)} failed",
                                      f"it returned {type(data).__name__} without an `{IMAGE_KEY}` key; only "
                                      "transforms that map one sample to one sample can be used")
        out = convert_to_numpy(data[IMAGE_KEY], dtype=np.float32)
        what = f"MONAI preprocess ({', '.join(self.names)}){_where(self.source)}"
        if out.ndim != 3 or out.shape[0] not in (1, 3):
            raise PreprocessError(what, f"it produced an image of shape {tuple(out.shape)}; expected [1 or 3, "
                                        "H, W] (channel first, 2-D)")
        if not np.isfinite(out).all():
            raise PreprocessError(what, "it produced NaN or infinite values")
        if out.shape[0] == 1:
            out = np.repeat(out, 3, axis=0)
        return np.ascontiguousarray(out.transpose(1, 2, 0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"Preprocess({', '.join(self.names)})"


class PreprocessedTransform:
    """``inner(preprocess(img))``: a user's MONAI transforms, then the standard train/eval transform."""

    def __init__(self, preprocess: Preprocess, inner):
        self.preprocess = preprocess
        self.inner = inner

    def reseed(self, seed: int) -> None:
        self.preprocess.set_random_state(seed)
        if hasattr(self.inner, "reseed"):
            self.inner.reseed(seed)

    def __call__(self, img: np.ndarray):
        return self.inner(self.preprocess(img))

    def __repr__(self) -> str:
        return f"{self.preprocess!r} -> {self.inner!r}"


def with_preprocess(transform, preprocess, train: bool = False) -> Any:
    """`transform` unchanged when there is no preprocess (the reference pixels), else wrapped. ``train``:
    keep the random transforms (augmentation); else only the deterministic ones."""
    pre = as_preprocess(preprocess)
    if pre is not None and not train:
        pre = pre.for_eval()
    return transform if pre is None else PreprocessedTransform(pre, transform)
