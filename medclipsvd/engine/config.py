"""Validated configuration: method hyper-parameters (configs/<protocol>/<dataset>.yaml) and pipelines
(pipelines/<name>.yaml). Values mirror the reference implementation; see docs/training.md."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, StrictBool, ValidationError,
                      field_validator, model_validator)

from medclipsvd.data.volumes.policy import KEYS as POLICY_KEYS
from medclipsvd.data.volumes.policy import InputPolicy, fold_loose_keys
from medclipsvd.errors import MedClipSVDError

Protocol = Literal["few_shot", "base2new", "cross_dataset", "domain_generalization"]
PROTOCOLS: tuple[str, ...] = ("few_shot", "base2new", "cross_dataset", "domain_generalization")
LAYER_BANDS = ("all", "top", "bottom", "middle", "top_bottom", "top_middle", "bottom_middle")


class ConfigError(MedClipSVDError, ValueError):
    """A pipeline or hyper-parameter file is missing or invalid."""


def _not_a_bool(v):
    """YAML reads `shots: true` as a bool, and pydantic would then take it as 1: a number field refuses
    true/false instead of running with a value nobody wrote."""
    if isinstance(v, bool):
        raise ValueError(f"{str(v).lower()} is not a number; write a number (e.g. 16), not true/false")
    return v


# K (images per class) beyond this is a typo, not a few-shot run: classes with fewer images are sampled with
# replacement (the reference rule), so K = 1e12 would build a list of 1e12 samples before training starts.
MAX_SHOTS = 10_000
# Seeds go to torch.manual_seed and numpy, which take at most 64 bits; 32 bits is what every tool accepts.
MAX_SEED = 2**32 - 1

# Numbers read from YAML or passed through the API: like int/float, but true/false are refused. The optional
# ones wrap the whole union, so that pydantic keeps its usual order of checks (a NaN is "not finite").
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
OptionalInt = Annotated[int | None, BeforeValidator(_not_a_bool)]
OptionalFloat = Annotated[float | None, BeforeValidator(_not_a_bool)]


def check_lr_floor(lr: float | None, eta_min: float, lr_name: str = "lr", eta_name: str = "eta_min") -> None:
    """The cosine schedule runs from lr down to eta_min; with eta_min above lr it runs *up* instead (a run
    meant at 0.002 then trains at 933). Refused rather than silently trained."""
    if lr is not None and eta_min > lr:
        raise ValueError(f"{eta_name} {eta_min:g} is larger than {lr_name} {lr:g}: the learning rate would climb "
                         f"from {lr:g} to {eta_min:g} instead of decaying; set eta_min below the learning rate "
                         f"(e.g. eta_min: 1e-6) or raise {lr_name}")


def check_template(v: str) -> str:
    """A prompt template holds exactly one ``{}`` (where the class name goes) and no other format field:
    ``str.format`` would otherwise fail mid-run or silently drop the class name."""
    import string

    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(v) if f is not None]
    except ValueError as exc:  # a lone '{' or '}'
        raise ValueError(f"template {v!r} is not a valid format string ({exc}); write literal braces as "
                         f"'{{{{' and '}}}}' and put exactly one '{{}}' where the class name goes") from None
    if len(fields) != 1 or fields[0] != ("", "", None):
        raise ValueError(f"template {v!r} must contain exactly one '{{}}' (where the class name goes) and no "
                         f"other fields, e.g. 'a photo of a {{}}.'")
    return v


def check_crop_scale(v: tuple[float, float]) -> tuple[float, float]:
    lo, hi = v
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"random_resized_crop_scale {list(v)} must be [min, max] with 0 < min <= max <= 1 "
                         f"(fractions of the image area), e.g. [0.08, 1.0]")
    return v


def _repo_dir(kind: str) -> Path:
    """`pipelines/` and `configs/`: MEDCLIPSVD_<KIND>_DIR if set; else the copy a wheel ships in
    medclipsvd/_shipped/ (see setup.py); else the folder next to the package in a checkout."""
    env = os.environ.get(f"MEDCLIPSVD_{kind.upper()}_DIR")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    shipped = package / "_shipped" / kind
    return shipped if shipped.is_dir() else package.parent / kind


def pipelines_dir() -> Path:
    return _repo_dir("pipelines")


def configs_dir() -> Path:
    return _repo_dir("configs")


class HParams(BaseModel):
    """Method hyper-parameters for one protocol and dataset (reference doc section 3)."""

    model_config = ConfigDict(extra="forbid")

    protocol: Protocol = "few_shot"
    dataset: str = "custom"
    backbone: str = "biomedclip"
    lr: Float = Field(2e-3, gt=0)
    train_epochs: Int = Field(100, ge=1)
    weight_decay: Float = Field(0.0, ge=0)
    layers: str = "all"
    template: str = "a photo of a {}."
    batch_size: Int = Field(32, ge=1)
    # "epochs": train_epochs * ceil(n_train / batch_size) (BiomedCLIP few-shot, all base-to-novel);
    # "shots": n_iters * K (CLIP few-shot, and the ImageNet source of cross-dataset / DG).
    iterations: Literal["epochs", "shots"] = "epochs"
    n_iters: Int = Field(200, ge=1)
    # What T_max the reference's per-iteration-stepped cosine used: the epoch count or the total.
    reference_t_max: Literal["epochs", "total"] = "epochs"
    shots: OptionalInt = Field(None, ge=1, le=MAX_SHOTS)
    source: str | None = None  # cross-dataset / DG: the dataset the weights are trained on
    eta_min: Float = Field(1e-6, ge=0, allow_inf_nan=False)

    @field_validator("layers")
    @classmethod
    def _known_band(cls, v: str) -> str:
        if v not in LAYER_BANDS:
            raise ValueError(f"layers must be one of {', '.join(LAYER_BANDS)}, got {v!r}")
        return v

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        return check_template(v)

    @field_validator("lr")
    @classmethod
    def _finite_lr(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"lr must be a finite positive number, got {v}")
        return v

    @model_validator(mode="after")
    def _decays(self) -> "HParams":
        check_lr_floor(self.lr, self.eta_min)
        return self

    def total_iterations(self, n_train: int, shots: int) -> int:
        """Number of optimiser steps, as the reference counts them (doc section 2, "Iterations")."""
        if self.iterations == "shots":
            return self.n_iters * shots
        return self.train_epochs * max(1, math.ceil(n_train / self.batch_size))

    def scheduler_t_max(self, total: int, reference_schedule: bool) -> int:
        """Period parameter of the cosine. Correct: the whole run. Reference: epochs, stepped per iteration."""
        if reference_schedule and self.reference_t_max == "epochs":
            return self.train_epochs
        return total


class Augmentation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    random_resized_crop_scale: tuple[Float, Float] = (0.08, 1.0)
    hflip: StrictBool | None = None  # None: the dataset's default (no flips where laterality matters)

    _scale = field_validator("random_resized_crop_scale")(classmethod(lambda cls, v: check_crop_scale(v)))


class TransformStep(BaseModel):
    """One MONAI dictionary transform of a pipeline's `preprocess:` list (medclipsvd/data/preprocess.py)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    args: dict = Field(default_factory=dict)


class Pipeline(BaseModel):
    """A named recipe: dataset, backbone, protocol defaults, augmentation, prompt template."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    suite: Literal["biomedical", "natural", "custom"]
    dataset: str
    backbone: str
    protocol: Protocol = "few_shot"
    shots: Int = Field(16, ge=1, le=MAX_SHOTS)
    preset: str = "paper"
    template: str | None = None
    hparams: HParams | None = None  # inline hyper-parameters (custom/demo); else configs/<protocol>/<dataset>.yaml
    augmentation: Augmentation = Augmentation()
    # MONAI dictionary transforms run on each decoded image before the standard transforms (empty: none).
    preprocess: list[TransformStep] = Field(default_factory=list)
    # hospital data. `input:` is how files become 2-D images, the InputPolicy (medclipsvd/data/volumes/policy.py:
    # slices, window, axis, dicom_frames, modality - the values of the CLI flags of the same names); the
    # same keys at the top level, as pipelines written before 0.3 give them, are read into it.
    input: InputPolicy = Field(default_factory=InputPolicy)
    # the split file (--split-file; a relative path is relative to the working directory, as on the command
    # line), which DICOM series become samples (medclipsvd/data/volumes/selection.py SeriesFilter; --series)
    # and what a series that cannot be read does (--on-bad-series)
    split_file: str | None = None
    series: dict | None = None
    on_bad_series: str = "error"

    @model_validator(mode="before")
    @classmethod
    def _nest_loose_input_keys(cls, values):
        return fold_loose_keys(values, "input", loose_wins=False)

    @field_validator("input", mode="before")
    @classmethod
    def _input_policy(cls, v):
        from medclipsvd.data.volumes.policy import check_option
        from medclipsvd.errors import DataError

        if isinstance(v, InputPolicy):
            v = dataclasses.asdict(v)
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise ValueError(f"expected a mapping of {', '.join(POLICY_KEYS)}, not {type(v).__name__}")
        unknown = [k for k in v if k not in POLICY_KEYS]
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; use {', '.join(POLICY_KEYS)}")
        for key, value in v.items():  # one at a time, so that the message names the key
            try:
                check_option(key, value)
            except DataError as exc:
                raise ValueError(f"{key} {value!r}: {exc}") from None
        return InputPolicy(**v)

    @field_validator("series", "on_bad_series")
    @classmethod
    def _series_option(cls, v, info):
        from medclipsvd.data.volumes.selection import SeriesFilter
        from medclipsvd.errors import DataError

        try:
            SeriesFilter.parse(v if info.field_name == "series" else {"on_bad_series": v})
        except DataError as exc:
            raise ValueError(str(exc)) from None
        return v

    def load_options(self) -> dict:
        """The pipeline's data keys as keyword arguments of `load_dataset` (and `RunSpec`): the input
        policy's keys, the split file and the series selection."""
        return {**self.input.to_dict(), "split_file": self.split_file, "series": self.series,
                "on_bad_series": self.on_bad_series}

    _source: str | None = PrivateAttr(None)  # the YAML file it came from (named in error messages)

    @property
    def source(self) -> str | None:
        return self._source

    @field_validator("template")
    @classmethod
    def _one_slot(cls, v: str | None) -> str | None:
        return None if v is None else check_template(v)

    def method_hparams(self, protocol: str | None = None) -> HParams:
        protocol = protocol or self.protocol
        if self.hparams is not None:
            hp = self.hparams.model_copy(update={"protocol": protocol, "dataset": self.dataset})
        else:
            hp = load_hparams(protocol, self.dataset)
        if self.template:
            hp = hp.model_copy(update={"template": self.template})
        return hp


def _read_yaml(path: Path, what: str) -> dict:
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_yaml

    try:
        data = load_yaml(path)  # UTF-8, no duplicate keys, no alias bombs: one line naming the file otherwise
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist") from None
    except FileFormatError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def _validate(model: type[BaseModel], data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigError(f"{path} is invalid: {problems}") from None


def hparam_datasets(protocol: str) -> list[str]:
    """The datasets (lower-case) that have reference hyper-parameters under `protocol`."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return sorted(p.stem for p in (configs_dir() / protocol).glob("*.yaml"))


def load_hparams(protocol: str, dataset: str) -> HParams:
    """Reference hyper-parameters of `dataset` under `protocol` (configs/<protocol>/<dataset>.yaml)."""
    have = hparam_datasets(protocol)
    # looked up among the files that exist, never joined into a path: a name such as '../../etc' must not
    # reach a YAML outside configs/
    if dataset.lower() not in have:
        raise ConfigError(f"no {protocol} hyper-parameters for dataset {dataset!r} (configs/{protocol}/ has none); "
                          f"available: {', '.join(have) or 'none'}")
    path = configs_dir() / protocol / f"{dataset.lower()}.yaml"
    return _validate(HParams, _read_yaml(path, "hyper-parameter"), path)


def list_pipelines() -> list[str]:
    return sorted(p.stem for p in pipelines_dir().glob("*.yaml"))


def load_pipeline(name_or_path: str) -> Pipeline:
    """A pipeline by name (pipelines/<name>.yaml) or by path to a YAML file."""
    from medclipsvd.io.special import special_problem

    path = Path(name_or_path)
    problem = special_problem(path, "pipeline YAML")
    if problem:  # a FIFO or a device, whatever its name: never opened
        raise ConfigError(f"--pipeline {path}: {problem}")
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = pipelines_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown pipeline {name_or_path!r}; run `medclipsvd pipelines` to list them "
                              f"({', '.join(list_pipelines())}) or pass a path to a pipeline YAML")
    pipeline = _validate(Pipeline, _read_yaml(path, "pipeline"), path)
    pipeline._source = str(path)
    if pipeline.preprocess:  # checked here, before any work: the allow-list first, then MONAI's value checks
        from medclipsvd.data.preprocess_steps import PreprocessConfigError, validate_steps

        try:
            validate_steps(pipeline.preprocess, source=str(path))
            from medclipsvd.data.preprocess import build_preprocess  # imports MONAI

            build_preprocess(pipeline.preprocess, source=str(path))
        except PreprocessConfigError as exc:
            raise ConfigError(str(exc)) from None
    return pipeline
