"""The allow-list of MONAI transforms a `preprocess:` step may name, and the type of every argument each takes.

A preprocess list is data read from files (pipeline YAML, results.json, model_config.json, a MONAI bundle's
inference.json) and MONAI transforms resolve some arguments to code (``LoadImaged(reader="pkg.fn")`` imports
and calls any dotted name; ``Lambdad(func=...)`` runs whatever it is given). So a step may only name a
transform listed here, with only the arguments listed for it, each a number, an integer, a boolean, a word
from a fixed vocabulary or a short list of numbers: no string can name code. Everything listed works on our
readers' output (a [3, H, W] tensor in [0, 1]): intensity, spatial and crop/pad transforms, no I/O and
nothing that takes a callable.

``validate_steps`` checks a list and returns it normalised (tuples become lists); it imports nothing heavy
(no MONAI), so every reader of a preprocess list calls it first, before any other work."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from medclipsvd.errors import MedClipSVDError

IMAGE_KEY = "image"
MAX_STEPS = 32
MAX_SIDE = 4096  # pixels: sizes a step may produce or crop to (a bigger one is a memory bomb, not a recipe)
DOCS = "docs/monai.md lists them with their arguments"


class PreprocessConfigError(MedClipSVDError, ValueError):
    """A preprocess step names a transform that is not allowed, or gives it arguments it does not accept."""


class _Bad(ValueError):
    pass


@dataclass(frozen=True)
class Arg:
    """One argument's type. kind: number | int | bool | choice | keys, or a sequence kind:
    numbers / ints (a value or a list of 1-3 values), pair ([low, high]), range (number or [low, high]),
    ranges (number, or a list of 1-3 numbers or [low, high] pairs), axes (two different spatial axes)."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    none: bool = False        # null allowed
    open_lo: bool = False     # lo itself excluded (a zoom or gamma of 0)

    # -- description (error messages and the docs table)
    def _bounds(self, what: str) -> str:
        if self.lo is None and self.hi is None:
            return what
        lo = "" if self.lo is None else f"{'>' if self.open_lo else '>='} {_num(self.lo)}"
        hi = "" if self.hi is None else f"<= {_num(self.hi)}"
        each = ", each" if self.kind not in ("number", "int") else ""
        return f"{what}{each} {lo}{' and ' if lo and hi else ''}{hi}"

    def describe(self) -> str:
        scalar = {"number": "number", "int": "integer"}
        text = {
            "number": self._bounds("a number"), "int": self._bounds("an integer"), "bool": "true or false",
            "choice": "one of " + ", ".join(self.choices), "keys": f'"{IMAGE_KEY}"',
            "numbers": self._bounds("a number or a list of 1-3 numbers"),
            "ints": self._bounds("an integer or a list of 1-3 integers"),
            "pair": self._bounds("[low, high] (numbers)"),
            "range": self._bounds("a number or [low, high]"),
            "int_range": self._bounds("an integer or [low, high] (integers)"),
            "ranges": "a number, or a list of 1-3 numbers or [low, high] pairs",
            "axes": "two different spatial axes, [0, 1] or [1, 0]",
        }.get(self.kind, scalar.get(self.kind, self.kind))
        return text + (", or null" if self.none else "")

    # -- checking
    def check(self, value: Any) -> Any:
        if value is None:
            if self.none:
                return None
            raise _Bad("null")
        k = self.kind
        if k == "number":
            return self._number(value)
        if k == "int":
            return self._int(value)
        if k == "bool":
            if isinstance(value, bool):
                return value
            raise _Bad("")
        if k == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise _Bad("")
        if k == "keys":
            if value == IMAGE_KEY or (isinstance(value, (list, tuple)) and list(value) == [IMAGE_KEY]):
                return value if isinstance(value, str) else [IMAGE_KEY]
            raise _Bad(f"(the sample has one key, {IMAGE_KEY!r})")
        if k in ("numbers", "ints"):
            one = self._number if k == "numbers" else self._int
            if not isinstance(value, (list, tuple)):
                return one(value)
            return [one(v) for v in _seq(value, 1, 3)]
        if k == "pair":
            return self._pair(value)
        if k in ("range", "int_range"):
            one = self._number if k == "range" else self._int
            return self._pair(value, one) if isinstance(value, (list, tuple)) else one(value)
        if k == "ranges":
            if not isinstance(value, (list, tuple)):
                return self._number(value)
            return [self._pair(v) if isinstance(v, (list, tuple)) else self._number(v) for v in _seq(value, 1, 3)]
        if k == "axes":
            if isinstance(value, (list, tuple)) and len(value) == 2 and \
                    all(isinstance(a, int) and not isinstance(a, bool) for a in value) and sorted(value) == [0, 1]:
                return list(value)
            raise _Bad("")
        raise AssertionError(f"unknown argument kind {k!r}")  # a typo in the table below

    def _number(self, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Bad("")
        self._in_bounds(value)
        return value

    def _int(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("")
        self._in_bounds(value)
        return value

    def _pair(self, value: Any, one=None) -> list:
        one = one or self._number
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise _Bad("")
        lo, hi = one(value[0]), one(value[1])
        if lo > hi:
            raise _Bad("(low > high)")
        return [lo, hi]

    def _in_bounds(self, value) -> None:
        if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
            raise _Bad("(out of range)")
        if self.hi is not None and value > self.hi:
            raise _Bad("(out of range)")


def _seq(value, lo: int, hi: int) -> list:
    if not lo <= len(value) <= hi:
        raise _Bad(f"({len(value)} values)")
    return list(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# ------------------------------------------------------------------------------------- vocabularies
INTERP = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")          # torch interpolate, 2-D
GRID = ("nearest", "bilinear", "bicubic")                                     # grid_sample modes
GRID_PAD = ("zeros", "border", "reflection")                                  # grid_sample padding
PAD = ("constant", "edge", "reflect", "replicate", "symmetric", "wrap", "circular", "minimum", "maximum",
       "mean", "median")                                                      # numpy / torch pad modes
METHOD = ("symmetric", "end")
APPROX = ("erf", "sampled", "scalespace")

NUMBER, BOOL = Arg("number"), Arg("bool")
PROB = Arg("number", 0, 1)
SIZE = Arg("ints", -1, MAX_SIDE)  # -1 (or 0): keep that side, as MONAI reads it
SIZE_REQ = Arg("ints", -1, MAX_SIDE, required=True)
ZOOM = Arg("numbers", 0, 4, open_lo=True)
PERCENT = Arg("number", 0, 100, required=True)
ALIGN = Arg("bool", none=True)

_INTENSITY_COMMON = {"channel_wise": BOOL}

ALLOWED: dict[str, dict[str, Arg]] = {
    # ---- intensity
    "Identityd": {},
    "ScaleIntensityRanged": {"a_min": Arg("number", required=True), "a_max": Arg("number", required=True),
                             "b_min": Arg("number", none=True), "b_max": Arg("number", none=True), "clip": BOOL},
    "ScaleIntensityd": {"minv": Arg("number", none=True), "maxv": Arg("number", none=True),
                        "factor": Arg("number", none=True), **_INTENSITY_COMMON},
    "ScaleIntensityRangePercentilesd": {"lower": PERCENT, "upper": PERCENT,
                                        "b_min": Arg("number", none=True, required=True),
                                        "b_max": Arg("number", none=True, required=True), "clip": BOOL,
                                        "relative": BOOL, **_INTENSITY_COMMON},
    "ClipIntensityPercentilesd": {"lower": Arg("number", 0, 100, none=True, required=True),
                                  "upper": Arg("number", 0, 100, none=True, required=True),
                                  "sharpness_factor": Arg("number", 0, None, none=True, open_lo=True),
                                  **_INTENSITY_COMMON},
    "NormalizeIntensityd": {"subtrahend": Arg("numbers", none=True), "divisor": Arg("numbers", none=True),
                            "nonzero": BOOL, **_INTENSITY_COMMON},
    "ThresholdIntensityd": {"threshold": Arg("number", required=True), "above": BOOL, "cval": NUMBER},
    "AdjustContrastd": {"gamma": Arg("number", 0, 10, required=True, open_lo=True), "invert_image": BOOL,
                        "retain_stats": BOOL},
    "ShiftIntensityd": {"offset": Arg("number", required=True), "safe": BOOL},
    "HistogramNormalized": {"num_bins": Arg("int", 2, 65536), "min": NUMBER, "max": NUMBER},
    "GaussianSmoothd": {"sigma": Arg("numbers", 0, 50, required=True), "approx": Arg("choice", choices=APPROX)},
    "GaussianSharpend": {"sigma1": Arg("numbers", 0, 50), "sigma2": Arg("numbers", 0, 50), "alpha": NUMBER,
                         "approx": Arg("choice", choices=APPROX)},
    "MedianSmoothd": {"radius": Arg("ints", 0, 16, required=True)},
    # ---- random intensity (augmentation: training only)
    "RandGaussianNoised": {"prob": PROB, "mean": NUMBER, "std": Arg("number", 0, None), "sample_std": BOOL},
    "RandRicianNoised": {"prob": PROB, "mean": Arg("numbers"), "std": Arg("numbers", 0, None), "relative": BOOL,
                         "sample_std": BOOL, **_INTENSITY_COMMON},
    "RandScaleIntensityd": {"factors": Arg("range", required=True), "prob": PROB, **_INTENSITY_COMMON},
    "RandShiftIntensityd": {"offsets": Arg("range", required=True), "safe": BOOL, "prob": PROB,
                            **_INTENSITY_COMMON},
    "RandStdShiftIntensityd": {"factors": Arg("range", required=True), "prob": PROB, "nonzero": BOOL,
                               **_INTENSITY_COMMON},
    "RandAdjustContrastd": {"prob": PROB, "gamma": Arg("range", 0, 10, open_lo=True), "invert_image": BOOL,
                            "retain_stats": BOOL},
    "RandGaussianSmoothd": {"sigma_x": Arg("pair", 0, 50), "sigma_y": Arg("pair", 0, 50),
                            "sigma_z": Arg("pair", 0, 50), "approx": Arg("choice", choices=APPROX), "prob": PROB},
    "RandHistogramShiftd": {"num_control_points": Arg("int_range", 3, 1000), "prob": PROB},
    "RandBiasFieldd": {"degree": Arg("int", 1, 10), "coeff_range": Arg("pair"), "prob": PROB},
    "RandCoarseDropoutd": {"holes": Arg("int", 1, 1000, required=True),
                           "spatial_size": Arg("ints", 1, MAX_SIDE, required=True), "dropout_holes": BOOL,
                           "fill_value": Arg("range", none=True), "max_holes": Arg("int", 1, 1000, none=True),
                           "max_spatial_size": Arg("ints", 1, MAX_SIDE, none=True), "prob": PROB},
    # ---- spatial
    "Rotate90d": {"k": Arg("int", -4, 4), "spatial_axes": Arg("axes")},
    "Flipd": {"spatial_axis": Arg("ints", 0, 1, none=True)},
    "Rotated": {"angle": Arg("numbers", required=True), "keep_size": BOOL, "mode": Arg("choice", choices=GRID),
                "padding_mode": Arg("choice", choices=GRID_PAD), "align_corners": BOOL},
    "Zoomd": {"zoom": Arg("numbers", 0, 4, required=True, open_lo=True), "mode": Arg("choice", choices=INTERP),
              "padding_mode": Arg("choice", choices=PAD), "align_corners": ALIGN, "keep_size": BOOL},
    "Resized": {"spatial_size": SIZE_REQ, "size_mode": Arg("choice", choices=("all", "longest")),
                "mode": Arg("choice", choices=INTERP), "align_corners": ALIGN, "anti_aliasing": BOOL,
                "anti_aliasing_sigma": Arg("numbers", 0, 50, none=True)},
    "Affined": {"rotate_params": Arg("numbers", none=True), "shear_params": Arg("numbers", none=True),
                "translate_params": Arg("numbers", none=True), "scale_params": Arg("numbers", 0, 4, none=True,
                                                                                   open_lo=True),
                "spatial_size": Arg("ints", -1, MAX_SIDE, none=True), "mode": Arg("choice", choices=GRID),
                "padding_mode": Arg("choice", choices=GRID_PAD), "align_corners": BOOL},
    # ---- random spatial (augmentation: training only)
    "RandRotate90d": {"prob": PROB, "max_k": Arg("int", 1, 3), "spatial_axes": Arg("axes")},
    "RandFlipd": {"prob": PROB, "spatial_axis": Arg("ints", 0, 1, none=True)},
    "RandAxisFlipd": {"prob": PROB},
    "RandRotated": {"range_x": Arg("range"), "range_y": Arg("range"), "range_z": Arg("range"), "prob": PROB,
                    "keep_size": BOOL, "mode": Arg("choice", choices=GRID),
                    "padding_mode": Arg("choice", choices=GRID_PAD), "align_corners": BOOL},
    "RandZoomd": {"prob": PROB, "min_zoom": ZOOM, "max_zoom": ZOOM, "mode": Arg("choice", choices=INTERP),
                  "padding_mode": Arg("choice", choices=PAD), "align_corners": ALIGN, "keep_size": BOOL},
    "RandAffined": {"spatial_size": Arg("ints", -1, MAX_SIDE, none=True), "prob": PROB,
                    "rotate_range": Arg("ranges", none=True), "shear_range": Arg("ranges", none=True),
                    "translate_range": Arg("ranges", none=True), "scale_range": Arg("ranges", none=True),
                    "mode": Arg("choice", choices=GRID), "padding_mode": Arg("choice", choices=GRID_PAD),
                    "cache_grid": BOOL},
    "Rand2DElasticd": {"spacing": Arg("range", 0, MAX_SIDE, required=True, open_lo=True),
                       "magnitude_range": Arg("pair", 0, None, required=True),
                       "spatial_size": Arg("ints", -1, MAX_SIDE, none=True), "prob": PROB,
                       "rotate_range": Arg("ranges", none=True), "shear_range": Arg("ranges", none=True),
                       "translate_range": Arg("ranges", none=True), "scale_range": Arg("ranges", none=True),
                       "mode": Arg("choice", choices=GRID), "padding_mode": Arg("choice", choices=GRID_PAD)},
    # ---- crop / pad
    "SpatialPadd": {"spatial_size": SIZE_REQ, "method": Arg("choice", choices=METHOD),
                    "mode": Arg("choice", choices=PAD)},
    "BorderPadd": {"spatial_border": Arg("ints", 0, MAX_SIDE // 4, required=True),
                   "mode": Arg("choice", choices=PAD)},
    "DivisiblePadd": {"k": Arg("ints", 1, 1024, required=True), "mode": Arg("choice", choices=PAD),
                      "method": Arg("choice", choices=METHOD)},
    "CenterSpatialCropd": {"roi_size": SIZE_REQ},
    "SpatialCropd": {"roi_center": Arg("ints", 0, MAX_SIDE, none=True), "roi_size": SIZE,
                     "roi_start": Arg("ints", 0, MAX_SIDE, none=True), "roi_end": Arg("ints", 0, MAX_SIDE, none=True)},
    "ResizeWithPadOrCropd": {"spatial_size": SIZE_REQ, "mode": Arg("choice", choices=PAD),
                             "method": Arg("choice", choices=METHOD)},
    "CenterScaleCropd": {"roi_scale": Arg("numbers", 0, 1, required=True, open_lo=True)},
    "CropForegroundd": {"source_key": Arg("choice", choices=(IMAGE_KEY,), required=True),
                        "margin": Arg("ints", 0, MAX_SIDE), "allow_smaller": BOOL,
                        "k_divisible": Arg("ints", 1, 1024), "mode": Arg("choice", choices=PAD)},
    "RandSpatialCropd": {"roi_size": SIZE_REQ, "max_roi_size": Arg("ints", -1, MAX_SIDE, none=True),
                         "random_center": BOOL, "random_size": BOOL},
    "RandScaleCropd": {"roi_scale": Arg("numbers", 0, 1, required=True, open_lo=True),
                       "max_roi_scale": Arg("numbers", 0, 1, none=True, open_lo=True), "random_center": BOOL,
                       "random_size": BOOL},
}
KEYS = Arg("keys")  # every transform takes `keys` (default "image", the only key a sample has)

_CODE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$|^\$|^@|^%")  # os.system, $expr, @ref, %macro


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _close(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(ALLOWED), n=3, cutoff=0.6)
    if isinstance(name, str) and name + "d" in ALLOWED:
        return f" ({name} is an array transform: use the dictionary version {name}d)"
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_step(name: Any, args: Any, label: str) -> dict:
    """``args`` of transform ``name`` checked against the allow-list; ``label`` names the step in errors
    (e.g. ``"p.yaml: preprocess step 2"``). Returns the arguments normalised."""
    if not isinstance(name, str) or name not in ALLOWED:
        shown = _short(name) if not isinstance(name, str) else repr(name[:80])
        hint = _close(name) if isinstance(name, str) else ""
        raise PreprocessConfigError(f"{label} {shown} is not allowed{hint}; allowed: {', '.join(ALLOWED)} "
                                    f"({DOCS})")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise PreprocessConfigError(f"{label} {name!r}: `args:` must be a mapping of argument names to values, "
                                    f"got {_short(args)}")
    spec = {"keys": KEYS, **ALLOWED[name]}
    out = {}
    for key, value in args.items():
        if key not in spec:
            import difflib

            close = difflib.get_close_matches(str(key), list(spec), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PreprocessConfigError(f"{label} {name!r}: argument {_short(key)} is not allowed{hint}; it "
                                        f"takes {', '.join(spec)} ({DOCS})")
        try:
            out[key] = spec[key].check(value)
        except _Bad as bad:
            extra = f" {bad}" if str(bad) else ""
            code = (" (a name of code or a config expression: a preprocess step holds data, never code)"
                    if isinstance(value, str) and _CODE_NAME.search(value) else "")
            raise PreprocessConfigError(f"{label} {name!r}: argument {key!r} must be {spec[key].describe()}, "
                                        f"got {_short(value)}{extra}{code}") from None
    missing = [k for k, a in spec.items() if a.required and k not in args]
    if missing:
        raise PreprocessConfigError(f"{label} {name!r}: missing required argument(s) {', '.join(missing)} "
                                    f"({spec[missing[0]].describe()})")
    return out


def validate_steps(steps: Any, source: str | None = None) -> list[dict]:
    """A preprocess list ([{"name", "args"}], or pydantic models with those fields) checked against the
    allow-list before anything runs; returns it normalised. ``source``: the file it came from (named in the
    one-line ``PreprocessConfigError``)."""
    where = _where(source)
    if steps is None:
        return []
    if not isinstance(steps, (list, tuple)):
        raise PreprocessConfigError(f"{where}`preprocess` must be a list of steps ({{name: ..., args: {{...}}}}), "
                                    f"got {_short(steps)}")
    if len(steps) > MAX_STEPS:
        raise PreprocessConfigError(f"{where}`preprocess` has {len(steps)} steps; at most {MAX_STEPS} are accepted")
    out = []
    for i, step in enumerate(steps):
        label = f"{where}preprocess step {i + 1}"
        if hasattr(step, "model_dump"):
            step = step.model_dump()
        if not isinstance(step, dict) or "name" not in step:
            raise PreprocessConfigError(f"{label} must be a mapping with `name:` (an allowed MONAI dictionary "
                                        f"transform, e.g. ScaleIntensityRanged) and optional `args:`, got "
                                        f"{_short(step)}")
        unknown = [k for k in step if k not in ("name", "args")]
        if unknown:
            raise PreprocessConfigError(f"{label} {_short(step['name'])} has unknown key(s) "
                                        f"{', '.join(map(_short, unknown))}; a step holds `name:` and `args:`")
        args = check_step(step["name"], step.get("args"), label)
        out.append({"name": step["name"], "args": args})
    return out


def docs_table() -> str:
    """The markdown table of docs/monai.md (kept equal to it by a test)."""
    lines = ["| transform | arguments (besides `keys`, which may only be `\"image\"`) |", "|---|---|"]
    for name, spec in ALLOWED.items():
        args = "; ".join(f"`{k}`{'*' if a.required else ''}: {a.describe()}" for k, a in spec.items()) or "none"
        lines.append(f"| `{name}` | {args} |")
    return "\n".join(lines)
