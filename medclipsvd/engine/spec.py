"""`RunSpec`: everything that defines one run, as one validated pydantic model.

The CLI (`train`), pipelines (`engine/pipeline_spec.py`), the benchmark (a base RunSpec plus per-run
updates, `protocols/harness.py`) and the Python API all build this one type, so they share one set of
limits, and a refused value is one `ConfigError` naming the option the user typed (``--shots 0: ...``).
How images are read is the nested `InputPolicy` (``policy``); its four keys may also be given loose, as
on the command line (``RunSpec(..., slices="all")``)."""
from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from medclipsvd.data.volumes.policy import KEYS as POLICY_KEYS
from medclipsvd.data.volumes.policy import InputPolicy, fold_loose_keys
from medclipsvd.engine.config import (MAX_SEED, MAX_SHOTS, ConfigError, Float, HParams, Int, OptionalFloat, OptionalInt,
                                      check_crop_scale, check_lr_floor)


def _path_text(v):
    """Paths are kept as text (they are recorded in results.json and MLflow parameters as text)."""
    return str(v) if isinstance(v, PurePath) else v


PathText = Annotated[str, BeforeValidator(_path_text)]
OptionalPathText = Annotated[str | None, BeforeValidator(_path_text)]

# Field -> the CLI option (or pipeline key) that sets it, so an error names what the user typed.
OPTION_NAMES = {"shots": "--shots", "seed": "--seed", "lr": "--lr", "max_steps": "--max-steps",
                "checkpoint_every": "--checkpoint-every", "num_workers": "--num-workers",
                "eval_batch_size": "eval_batch_size", "crop_scale": "augmentation.random_resized_crop_scale",
                "precision": "--precision"}


class RunSpec(BaseModel):
    """Everything that defines one run. `hp` carries the method hyper-parameters (configs/)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    hp: HParams
    backbone: str = "biomedclip"
    method: str = "svd"
    protocol: str = "few_shot"
    shots: Int = Field(16, ge=1, le=MAX_SHOTS)
    seed: Int = Field(1, ge=0, le=MAX_SEED)
    data_root: PathText = "."
    output: PathText = "runs/out"
    device: str = "auto"
    mode: str = "improved"                  # parity | improved (engine/modes.py)
    reference_schedule: bool = False        # improved mode: take only parity's learning-rate schedule
    hflip: bool | None = None
    crop_scale: tuple[Float, Float] = (0.08, 1.0)
    lr: OptionalFloat = Field(None, gt=0, allow_inf_nan=False)  # override (baselines have their own defaults)
    max_steps: OptionalInt = Field(None, ge=1)  # cap the iteration count (smoke tests); None: the reference's
    checkpoint_every: Int = Field(0, ge=0)
    resume: bool = False
    num_workers: OptionalInt = Field(None, ge=0)  # None: from the CPU count on CUDA, 0 on CPU
    eval_batch_size: Int = Field(64, ge=1)
    progress: bool = True
    backbone_kwargs: dict = Field(default_factory=dict)  # weights=, text_dir=, random_init= for load_backbone
    targets: list[str] = Field(default_factory=list)     # cross-dataset / DG: datasets evaluated after training
    allow_missing: bool = False
    plots: bool = True                                   # per-run figures (benchmarks turn them off)
    # MONAI dictionary transforms ([{"name", "args"}], from the pipeline's `preprocess:`) run before the
    # standard transforms; empty: the reference's transforms alone. preprocess_source: the YAML they came from.
    preprocess: list = Field(default_factory=list)
    preprocess_source: str | None = None
    # hospital data: the split file, and how files become 2-D images (recorded once: results.json "run"."input")
    split_file: OptionalPathText = None
    policy: InputPolicy = Field(default_factory=InputPolicy)
    # which DICOM series become samples (SeriesFilter keys, medclipsvd/data/volumes/selection.py; --series) and
    # what a series that cannot be read does (--on-bad-series)
    series: dict | None = None
    on_bad_series: str = "error"

    cache_dir: OptionalPathText = None                   # preprocessed eval cache: None default folder, 'off'
    precision: str = "auto"                              # auto | fp32 | bf16 | fp16 (medclipsvd/device.py)
    follow_symlinks: bool = False                        # data entries may be symlinks leading outside the root
    force: bool = False                                  # replace a completed (or interrupted) run in `output`

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:  # one line naming the options, as the CLI spells them
            raise ConfigError(_option_message(exc, values)) from None

    def replace(self, **updates: Any) -> "RunSpec":
        """A copy with `updates` applied and validated again (unlike ``model_copy``, which checks nothing):
        how a benchmark makes each run from its base spec."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **updates})

    @model_validator(mode="before")
    @classmethod
    def _nest_loose_policy_keys(cls, values):
        return fold_loose_keys(values, "policy", loose_wins=True)

    _scale = field_validator("crop_scale")(classmethod(lambda cls, v: check_crop_scale(v)))

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, v: str) -> str:
        from medclipsvd.device import PRECISIONS, PRECISION_CHOICES

        if v not in PRECISIONS:  # whether this machine can run it is decided per run (engine/steps.py)
            raise ValueError(PRECISION_CHOICES)
        return v

    @field_validator("num_workers")
    @classmethod
    def _bounded_workers(cls, v: int | None) -> int | None:
        from medclipsvd.data.workers import num_workers_problem

        problem = None if v is None else num_workers_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _runnable(self) -> "RunSpec":
        if not str(self.output).strip():
            raise ValueError(f"--output {str(self.output)!r}: an empty path would write into the current folder; "
                             "name the run folder, e.g. --output runs/busi-k4")
        lr, lr_name = self._training_lr()
        check_lr_floor(lr, self.hp.eta_min, lr_name, "the hyper-parameters' eta_min")
        return self

    def _training_lr(self) -> tuple[float | None, str]:
        """The rate the optimiser will start from, and what set it (for messages)."""
        from medclipsvd.methods.registry import DEFAULT_LR

        if self.lr is not None:
            return self.lr, "--lr"
        if self.method == "svd":
            return self.hp.lr, "lr"
        return DEFAULT_LR.get(self.method), f"the {self.method} default learning rate"

    def input_policy(self) -> dict:
        """The input policy and split file as keyword arguments of `load_dataset`."""
        return {**self.policy.to_dict(), "split_file": self.split_file}

    def load_kwargs(self) -> dict:
        """What `load_dataset` is given for this run: the input policy, split file and series selection."""
        policy = self.input_policy()
        return {**{k: policy[k] for k in ("split_file", *POLICY_KEYS) if k in policy}, "series": self.series,
                "on_bad_series": self.on_bad_series}

    def params(self) -> dict:
        """Flat parameters (results.json "spec", MLflow): the policy's keys in its place, ``hp.*`` last,
        lists and dicts as text - the record's layout from before the policy was nested."""
        d: dict = {}
        for name in type(self).model_fields:
            if name == "policy":
                d.update(self.policy.to_dict())
            elif name != "hp":
                d[name] = getattr(self, name)
        d.update({f"hp.{k}": v for k, v in self.hp.model_dump().items()})
        return {k: (str(v) if isinstance(v, (list, tuple, dict)) else v) for k, v in d.items()}


def _option_message(exc: ValidationError, values: dict) -> str:
    parts = []
    for e in exc.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a check of the whole spec: its message names what to change
            parts.append(msg)
            continue
        name = str(e["loc"][0])
        parts.append(f"{OPTION_NAMES.get(name, name)} {values.get(name)!r}: {msg}")
    return "; ".join(parts)
