"""`InputPolicy`: how files become the 2-D images a model sees, as one typed value.

One value carries the four input knobs everywhere: `load_dataset` (custom data), the pipeline YAML and the
CLI flags (validated through `check_option`, so a message names the option), the training run's record, the
model configuration's "view" and the serving Predictor / MONAI bundle, which read inputs with the policy the
model was trained with. It is recorded once, as results.json "run"."input" (`to_dict`); `from_run` also
reads folders written before that record existed (the four keys directly in "run").

``slices`` / ``axis``: the 3-D -> 2-D policy (``medclipsvd.data.volumes.slicing``); ``window``: CT window or
percentile scaling (``medclipsvd.data.volumes.windows``; None = auto: the series' own CT window, MR percentiles);
``dicom_frames``: what a multi-frame DICOM file is - ``middle`` (its middle frame as a 2-D image, default),
``all`` (every frame a 2-D sample) or ``volume`` (a volume, ordered by its per-frame plane positions;
``slices`` applies); ``modality``: what a volume without a Modality tag (NIfTI) is - ``CT`` (HU windows) or
``MR`` (percentile scaling), overriding the guess from its minimum value (None: the guess; DICOM series keep
their own tag). A new knob is one field here plus its parse function."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from medclipsvd.data.volumes.windows import MODALITIES, parse_modality
from medclipsvd.errors import DataError

DICOM_FRAMES = ("middle", "all", "volume")
KEYS = ("slices", "window", "axis", "dicom_frames", "modality")  # the order of the records (model_config "view")


@dataclass(frozen=True)
class InputPolicy:
    slices: str = "middle"
    window: str | None = None
    axis: str = "axial"
    dicom_frames: str = "middle"
    modality: str | None = None

    @classmethod
    def from_run(cls, run: dict | None, **overrides) -> "InputPolicy":
        """The policy a training run recorded (results.json "run": its "input" record; folders written
        before 0.2 have the four keys in "run" itself), or a model configuration's "view"; then any non-None
        overrides. Keys it does not know are ignored (a run records much more)."""
        run = run or {}
        record = run.get("input") if isinstance(run.get("input"), dict) else run
        values = {k: record.get(k) for k in KEYS if record.get(k) is not None}
        if str(values.get("modality", "")).upper() not in MODALITIES:  # an old "run" may name a dataset modality
            values.pop("modality", None)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def validate(self) -> "InputPolicy":
        from medclipsvd.data.volumes.slicing import axis_dim, parse_slices
        from medclipsvd.data.volumes.windows import parse_window

        parse_slices(self.slices)
        axis_dim(self.axis)
        parse_window(self.window)
        if self.dicom_frames not in DICOM_FRAMES:
            raise DataError(f"dicom_frames must be one of {', '.join(DICOM_FRAMES)}, not {self.dicom_frames!r}")
        parse_modality(self.modality)
        return self

    @property
    def view(self) -> str:
        """The ``slices|axis|window`` string a volume sample carries (the dataset's cache key)."""
        from medclipsvd.data.volumes.views import make_view

        return make_view(self.slices, self.axis, self.window, parse_modality(self.modality))

    def planes(self, path: str) -> list[int | None]:
        """Plane indices of one volume that become samples."""
        from medclipsvd.data.volumes.slicing import parse_slices, plane_indices
        from medclipsvd.data.volumes.read import volume_num_slices

        policy = parse_slices(self.slices)
        if policy.mode == "roi" or policy.crop:  # the mask is found now: a series without one fails the listing
            from medclipsvd.data.volumes.roi import roi_depth
            from medclipsvd.data.volumes.slicing import axis_dim

            depth = roi_depth(path, policy, axis_dim(self.axis))
            return [None] if policy.single else plane_indices(policy, depth)
        return [None] if policy.single else plane_indices(policy, volume_num_slices(path, self.axis))

    def to_dict(self) -> dict:
        """The record: model_config.json "view", the bundle's settings (window None = auto; modality only
        when given, so records of runs without it are unchanged)."""
        d = asdict(self)
        if d["modality"] is None:
            del d["modality"]
        return d

    def summary(self) -> dict:
        """As a dataset's info shows it ("volumes": window "auto" spelled out)."""
        out = {"slices": self.slices, "axis": self.axis, "window": self.window or "auto",
               "dicom_frames": self.dicom_frames}
        return {**out, "modality": parse_modality(self.modality)} if self.modality else out


def check_option(key: str, value) -> None:
    """Validate one knob alone (``DataError`` from its parser), so callers can name the option in the message."""
    InputPolicy(**{key: value}).validate()


def fold_loose_keys(values, field: str, *, loose_wins: bool):
    """``values`` (a mapping about to be validated) with the policy keys given loose, the flat form of older
    pipeline YAMLs and of keyword calls, moved under its nested ``field``. A key given both ways: the loose one
    wins when ``loose_wins`` (keyword overrides of a base RunSpec), else ValueError naming it (a YAML that says
    two things). Anything that is not a mapping is left for the field's own validation."""
    if not isinstance(values, dict) or not any(k in values for k in KEYS):
        return values
    loose = {k: values[k] for k in KEYS if k in values}
    values = {k: v for k, v in values.items() if k not in loose}
    nested = values.get(field)
    if isinstance(nested, InputPolicy):
        nested = asdict(nested)
    if nested is None:
        nested = {}
    if not isinstance(nested, dict):
        return values
    twice = sorted(set(nested) & set(loose))
    if twice and not loose_wins:
        raise ValueError(f"{twice[0]} is given twice, at the top level and under {field}:; keep the one under "
                         f"{field}:")
    values[field] = {**nested, **loose}
    return values
