"""Two explicit run modes.

* ``parity`` reproduces the reference implementation (HealthX-Lab/CLIP-SVD @ 022b1ed) exactly, so a
  benchmark can be compared with the paper's tables run for run.
* ``improved`` is medclipsvd's own behaviour: each departure fixes something in the reference (reasons in
  docs/training.md, "Modes").

A mode is a bundle of switches; the engine reads the switches, never the mode name, so each difference
lives in one place and can be tested on its own. `medclipsvd benchmark` defaults to parity (it exists to
reproduce the paper), `medclipsvd train` to improved.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from medclipsvd.errors import MedClipSVDError

MODES: tuple[str, ...] = ("parity", "improved")
DEFAULT_TRAIN_MODE = "improved"
DEFAULT_BENCHMARK_MODE = "parity"

Amp = Literal["fp16", "bf16", "fp32"]


@dataclass(frozen=True)
class ModeSettings:
    name: str
    # Cosine T_max = train_epochs stepped per iteration (oscillates) instead of one decay over the run.
    reference_schedule: bool
    # Random horizontal flip (p=0.5) on every dataset, including those where laterality matters.
    hflip_all: bool
    # base2new few-shot draw: K per class over ALL classes, then keep the base classes (the reference's
    # order) -- or split first and draw only among base classes.
    base2new_draw: Literal["all_then_base", "base_only"]
    # Autocast dtype on CUDA: training forward/loss, evaluation text features, evaluation image features.
    # These are what `--precision auto` runs on CUDA; medclipsvd/device.py maps them to other devices and
    # records what ran. No GradScaler in either mode.
    train_amp: Amp
    eval_text_amp: Amp
    eval_image_amp: Amp
    # Standard deviation over seeds in the tables: ddof 0 (numpy's default, the reference) or 1 (sample std).
    std_ddof: int
    # Cross-dataset targets include EuroSAT (its config exists; the reference's script leaves it out).
    cross_dataset_eurosat: bool

    def as_dict(self) -> dict:
        return asdict(self)


PARITY = ModeSettings(name="parity", reference_schedule=True, hflip_all=True, base2new_draw="all_then_base",
                      train_amp="fp16", eval_text_amp="fp16", eval_image_amp="fp32", std_ddof=0,
                      cross_dataset_eurosat=False)
IMPROVED = ModeSettings(name="improved", reference_schedule=False, hflip_all=False, base2new_draw="base_only",
                        train_amp="bf16", eval_text_amp="bf16", eval_image_amp="bf16", std_ddof=1,
                        cross_dataset_eurosat=True)
_BY_NAME = {"parity": PARITY, "improved": IMPROVED}


def mode_settings(name: str) -> ModeSettings:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise MedClipSVDError(f"unknown --mode {name!r}; choose parity (the reference implementation exactly) "
                              "or improved (medclipsvd's fixes, see docs/training.md)") from None


def results_mode(results: dict) -> str:
    """The mode a results.json was written under. Files from before modes existed ran medclipsvd's own
    behaviour, i.e. `improved` (their `--reference-schedule` flag is in spec.reference_schedule)."""
    return str(results.get("mode") or "improved")


def base2new_few_shot(splits, k: int, seed: int, mode: ModeSettings):
    """The base-to-novel training set: K per class of the base classes (labels 0..ceil(C/2)-1).

    parity: the reference's order -- val (min(K,4)) then train (K) drawn per class over ALL classes from
    one seeded stream, then the new classes dropped; so a base class's draw depends on the new classes'
    items that came before it in the stream. improved: the base classes are split off first and only they
    are drawn from, so the training set does not depend on classes the model never sees."""
    from medclipsvd.data import sample_few_shot, split_base_new

    if mode.base2new_draw == "all_then_base":
        return split_base_new(sample_few_shot(splits, k, seed), "base")
    return sample_few_shot(split_base_new(splits, "base"), k, seed)
