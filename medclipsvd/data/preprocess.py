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

Names are checked at pipeline load (unknown name, array instead of dictionary transform, argument the
transform does not take, value it refuses): one-line ``ConfigError``. A transform that fails on an image
raises a one-line ``PreprocessError`` naming the transform, the pipeline file and the image file.
MONAI is imported only when a preprocess list or a Compose is used (it costs seconds to import)."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Sequence

import numpy as np

from medclipsvd.errors import DataError, MedClipSVDError

IMAGE_KEY = "image"


class PreprocessConfigError(MedClipSVDError, ValueError):
    """A preprocess step names an unknown MONAI transform or gives it arguments it does not accept."""


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


def _step_parts(step: Any, i: int, source: str | None) -> tuple[str, dict]:
    """(name, args) of a step given as {"name": ..., "args": {...}} (or a pydantic model with those fields)."""
    if hasattr(step, "model_dump"):
        step = step.model_dump()
    if not isinstance(step, dict) or not isinstance(step.get("name"), str) or not step["name"]:
        raise PreprocessConfigError(f"preprocess step {i + 1}{_where(source)} must be a mapping with `name:` "
                                    f"(a MONAI dictionary transform, e.g. ScaleIntensityRanged) and optional "
                                    f"`args:`, got {step!r}")
    unknown = set(step) - {"name", "args"}
    if unknown:
        raise PreprocessConfigError(f"preprocess step {i + 1} ({step['name']}){_where(source)} has unknown "
                                    f"key(s) {', '.join(sorted(unknown))}; a step holds `name:` and `args:`")
    args = step.get("args") or {}
    if not isinstance(args, dict):
        raise PreprocessConfigError(f"preprocess step {i + 1} ({step['name']}){_where(source)}: `args:` must be "
                                    f"a mapping of argument names to values, got {args!r}")
    return step["name"], dict(args)


def _resolve(name: str, i: int, source: str | None):
    mt = _monai_transforms()
    cls = getattr(mt, name, None)
    label = f"preprocess step {i + 1}{_where(source)}"
    if not (inspect.isclass(cls) and issubclass(cls, mt.Transform)):
        names = [n for n in dir(mt) if n.endswith("d") and inspect.isclass(getattr(mt, n))
                 and issubclass(getattr(mt, n), mt.MapTransform)]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see monai.transforms for the names"
        raise PreprocessConfigError(f"{label}: unknown MONAI transform {name!r}; {hint} "
                                    "(dictionary transforms end in 'd', e.g. ScaleIntensityRanged)")
    if not issubclass(cls, mt.MapTransform):
        alt = name + "d"
        hint = (f"use the dictionary version {alt}" if inspect.isclass(getattr(mt, alt, None))
                else "use a dictionary transform (name ending in 'd')")
        raise PreprocessConfigError(f"{label}: {name} is an array transform; {hint}, which works on "
                                    "the sample's `image` key")
    return cls


def build_step(name: str, args: dict, i: int = 0, source: str | None = None):
    """One MONAI dictionary transform, its arguments checked against its signature first."""
    cls = _resolve(name, i, source)
    label = f"preprocess step {i + 1} ({name}){_where(source)}"
    args = dict(args)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if n != "self"
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if "keys" in accepted:
        args.setdefault("keys", IMAGE_KEY)
    bad = [a for a in args if a not in accepted]
    if bad and not takes_any:
        close = {a: difflib.get_close_matches(a, accepted, n=1) for a in bad}
        hints = "; ".join(f"did you mean {c[0]!r} for {a!r}?" for a, c in close.items() if c)
        raise PreprocessConfigError(f"{label}: unknown argument(s) {', '.join(map(repr, bad))}"
                                    f"{' (' + hints + ')' if hints else ''}; it takes {', '.join(accepted)}")
    try:
        inspect.signature(cls.__init__).bind(None, **args)
    except TypeError as exc:
        raise PreprocessConfigError(f"{label}: {exc}; it takes {', '.join(accepted)}") from None
    try:
        return cls(**args)
    except Exception as exc:  # the transform's own value checks (types, ranges, enum names)
        raise PreprocessConfigError(f"{label}: the arguments were refused ({_first_line(exc)}); check "
                                    "their values against the MONAI documentation of the transform") from None


def build_preprocess(steps: Sequence, source: str | None = None) -> "Preprocess | None":
    """A ``Preprocess`` from YAML-style steps ([{"name", "args"}]); None when there are none."""
    if not steps:
        return None
    built = []
    for i, step in enumerate(steps):
        name, args = _step_parts(step, i, source)
        built.append((name, build_step(name, args, i, source)))
    return Preprocess(built, source=source)


def as_preprocess(obj, source: str | None = None) -> "Preprocess | None":
    """None, a ``Preprocess``, a ``monai.transforms.Compose`` (or one MONAI transform), or a list of steps."""
    if obj is None or isinstance(obj, Preprocess):
        return obj
    if isinstance(obj, (list, tuple)) and all(isinstance(s, dict) or hasattr(s, "model_dump") for s in obj):
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
