"""Intensity of volumes in physical units: CT Hounsfield-unit windows (presets, ``W/L``, ``multi``) and
percentile scaling for MR and other modalities.

A window ``W/L`` maps HU ``L - W/2 .. L + W/2`` linearly onto 0..1 (clipped). ``multi`` puts three windows
into the three colour channels (default: lung, mediastinum, bone - air/lung, soft tissue and bone each get
the full grey range of one channel). ``auto`` (the default) uses, for CT, the window the series itself
stores (its first Window Center/Width) and otherwise ``mediastinum`` (soft tissue); windows only apply to
CT: MR and other modalities (and ``auto`` for them) are scaled between the volume's 0.5th and 99.5th
percentiles, because their values have no physical scale."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medclipsvd.errors import DataError

MODALITIES = ("CT", "MR")  # what --modality may say a volume without a Modality tag (NIfTI) is

# name -> (width, level) in HU
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "bone": (2000.0, 500.0),
    "brain": (80.0, 40.0),
    "abdomen": (400.0, 50.0),
}
DEFAULT_MULTI = ("lung", "mediastinum", "bone")
AUTO_CT_FALLBACK = "mediastinum"
PERCENTILES = (0.5, 99.5)
WINDOW_HELP = ("auto (CT: the series' own window, else mediastinum; MR/other: percentiles), a preset "
               f"({', '.join(f'{k} W{w:g}/L{l:g}' for k, (w, l) in WINDOW_PRESETS.items())}), a custom W/L "
               f"such as 400/40, or multi (= multi:{','.join(DEFAULT_MULTI)}: three windows as RGB).")


@dataclass(frozen=True)
class Window:
    """A parsed ``--window`` value: ``kind`` auto | single | multi; ``windows`` (width, level) pairs."""

    spec: str
    kind: str
    windows: tuple[tuple[float, float], ...] = ()

    @property
    def channels(self) -> int:
        return 3 if self.kind == "multi" else 1


def _one(token: str, spec: str) -> tuple[float, float]:
    t = token.strip().lower()
    if t in WINDOW_PRESETS:
        return WINDOW_PRESETS[t]
    if "/" in t:
        w, _, l = t.partition("/")
        try:
            width, level = float(w.removeprefix("w")), float(l.removeprefix("l"))
        except ValueError:
            width = level = float("nan")
        if np.isfinite(width) and np.isfinite(level) and width > 0:
            return width, level
        raise DataError(f"window {spec!r}: a custom window is WIDTH/LEVEL in HU with WIDTH > 0, e.g. 400/40.")
    raise DataError(f"unknown window {token.strip()!r}; use auto, one of {', '.join(WINDOW_PRESETS)}, a custom "
                    f"WIDTH/LEVEL such as 400/40, or multi[:a,b,c].")


def parse_window(spec: str | None) -> Window:
    """``None``/``auto`` | preset | ``W/L`` | ``multi`` | ``multi:a,b,c`` -> ``Window`` (DataError otherwise)."""
    s = "auto" if spec is None else str(spec).strip()
    low = s.lower()
    if low in ("", "auto"):
        return Window("auto", "auto")
    if low == "multi" or low.startswith("multi:"):
        parts = DEFAULT_MULTI if low == "multi" else tuple(p for p in low[6:].split(",") if p.strip())
        if len(parts) != 3:
            raise DataError(f"window {s!r}: multi takes exactly three windows (one per colour channel), e.g. "
                            f"multi:{','.join(DEFAULT_MULTI)}.")
        return Window(low, "multi", tuple(_one(p, s) for p in parts))
    return Window(low, "single", (_one(s, s),))


def apply_hu_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """HU -> [0, 1]: ``level - width/2`` -> 0, ``level + width/2`` -> 1, clipped."""
    lo = level - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float32) - np.float32(lo)) / np.float32(width), 0.0, 1.0)


def percentile_range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(values, dtype=np.float32), PERCENTILES)
    return float(lo), float(hi)


def scale_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)


def resolve_windows(window: Window, is_ct: bool, stored: tuple[float, float] | None,
                    value_range: tuple[float, float]) -> list[tuple[str, float, float]]:
    """What to do with a volume: a list of ("hu", width, level) windows (one or three channels), or one
    ("range", lo, hi) entry (percentile scaling; ``value_range`` is the volume's percentile range)."""
    if not is_ct:
        return [("range", *value_range)]
    if window.kind == "auto":
        w, l = stored if stored is not None else WINDOW_PRESETS[AUTO_CT_FALLBACK]
        return [("hu", w, l)]
    return [("hu", w, l) for w, l in window.windows]


def to_unit(x: np.ndarray, how: tuple[str, float, float]) -> np.ndarray:
    kind, a, b = how
    return apply_hu_window(x, a, b) if kind == "hu" else scale_range(x, a, b)


def parse_modality(value) -> str | None:
    """``CT`` (HU windows) / ``MR`` (percentile scaling), any case, or None / ``auto`` for the guess from
    the voxel values."""
    if value is None or str(value).lower() == "auto":
        return None
    v = str(value).upper()
    if v not in MODALITIES:
        raise DataError(f"modality must be CT or MR (or auto: guessed from the values), not {value!r}")
    return v
