"""Which weight matrices get σ-adapted: `TargetSpec` (towers × layers × matrix kinds, optionally filtered by
module name, PEFT-style), named presets, and the enumeration of candidate matrices of a backbone."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, field_validator

from medclipsvd.backbones.architectures import MATRICES
from medclipsvd.errors import TargetError

Band = Literal["all", "top", "bottom", "middle", "top_bottom", "top_middle", "bottom_middle"]
BANDS: tuple[str, ...] = ("all", "top", "bottom", "middle", "top_bottom", "top_middle", "bottom_middle")


def band_layers(band: str, n_layers: int) -> list[int]:
    """Layer indices of a band. Bands are thirds of the depth: for 12 layers bottom = 0-3, middle = 4-7,
    top = 8-11 (the reference's `include_train_layers`)."""
    if band not in BANDS:
        raise TargetError(f"unknown layer band {band!r}; use one of {', '.join(BANDS)} or a list of indices")
    third = n_layers / 3
    thirds = {
        "bottom": [i for i in range(n_layers) if i < round(third)],
        "middle": [i for i in range(n_layers) if round(third) <= i < round(2 * third)],
        "top": [i for i in range(n_layers) if i >= round(2 * third)],
    }
    if band == "all":
        return list(range(n_layers))
    return sorted(i for name in band.split("_") for i in thirds[name])


class TargetSpec(BaseModel):
    """A selection of weight matrices. All conditions must hold (towers AND layers AND matrices AND modules).

    modules: PEFT-style filter on target names: a list of name suffixes, or one regular expression
    (full match), e.g. ["attn.in_proj.v", "mlp.c_fc"] or r".*\\.(9|10|11)\\..*"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    towers: Literal["vision", "text", "both"] = "both"
    layers: Union[Band, tuple[int, ...]] = "all"
    matrices: tuple[Literal["q", "k", "v", "o", "fc1", "fc2"], ...] = MATRICES
    modules: Union[str, tuple[str, ...], None] = None

    @field_validator("matrices")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("matrices must name at least one of q, k, v, o, fc1, fc2")
        return tuple(dict.fromkeys(v))

    def tower_names(self) -> tuple[str, ...]:
        return ("vision", "text") if self.towers == "both" else (self.towers,)


PRESETS: dict[str, TargetSpec] = {
    # the reference defaults: both towers, all layers, q, k, v, attention output and both MLP matrices
    "paper": TargetSpec(),
    "attention": TargetSpec(matrices=("q", "k", "v", "o")),
    "mlp": TargetSpec(matrices=("fc1", "fc2")),
    "vision-only": TargetSpec(towers="vision"),
    "text-only": TargetSpec(towers="text"),
}


def resolve_spec(targets: str | TargetSpec | dict) -> tuple[TargetSpec, str | None]:
    """(spec, preset name or None) from a preset name, a spec, or a dict of spec fields."""
    if isinstance(targets, TargetSpec):
        return targets, None
    if isinstance(targets, dict):
        return TargetSpec(**targets), None
    if targets in PRESETS:
        return PRESETS[targets], targets
    raise TargetError(f"unknown target preset {targets!r}; presets: {', '.join(PRESETS)}")


@dataclass(frozen=True)
class Candidate:
    """One adaptable matrix. `slot` is the module path of the linear map in the adapted model; `part` is
    "" for a whole Linear or "q"/"k"/"v" for a block of a fused projection."""

    tower: str
    layer: int
    matrix: str
    slot: str
    part: str

    @property
    def name(self) -> str:
        return f"{self.slot}.{self.part}" if self.part else self.slot


def enumerate_candidates(backbone) -> list[Candidate]:
    """Every matrix the paper preset could touch, in model order."""
    out = []
    for tower in ("vision", "text"):
        layout = backbone.layout(tower)
        for i in range(backbone.num_layers(tower)):
            block = f"{layout.blocks}.{i}"
            for matrix in MATRICES:
                if matrix in ("q", "k", "v") and layout.attention != "separate":
                    qkv = layout.paths["qkv"]
                    slot = f"{block}.{qkv}.in_proj" if layout.attention == "mha" else f"{block}.{qkv}"
                    out.append(Candidate(tower, i, matrix, slot, matrix))
                else:
                    out.append(Candidate(tower, i, matrix, f"{block}.{layout.paths[matrix]}", ""))
    return out


def select_targets(backbone, spec: TargetSpec) -> list[Candidate]:
    chosen = []
    for tower in spec.tower_names():
        n = backbone.num_layers(tower)
        if isinstance(spec.layers, str):
            layers = set(band_layers(spec.layers, n))
        else:
            bad = [i for i in spec.layers if not 0 <= i < n]
            if bad:
                raise TargetError(f"layer indices {bad} do not exist in the {tower} tower of "
                                  f"{backbone.name} (layers 0-{n - 1})")
            layers = set(spec.layers)
        chosen += [c for c in enumerate_candidates(backbone)
                   if c.tower == tower and c.layer in layers and c.matrix in spec.matrices]
    if spec.modules is not None:
        if isinstance(spec.modules, str):
            pattern = re.compile(spec.modules)
            chosen = [c for c in chosen if pattern.fullmatch(c.name)]
        else:
            chosen = [c for c in chosen if any(c.name == m or c.name.endswith("." + m) for m in spec.modules)]
    if not chosen:
        example = enumerate_candidates(backbone)[0].name
        raise TargetError(f"the target specification {spec.model_dump()} selects no matrix of {backbone.name}; "
                          f"target names look like {example!r}")
    return chosen


def candidate_shape(model, candidate: Candidate) -> tuple[int, int]:
    """(rows, columns) of the matrix a candidate names, read from the plain (not yet adapted) model. Works on
    models built on the meta device, so counts of full-size architectures cost no memory."""
    from torch import nn

    *head, leaf = candidate.slot.split(".")
    parent = model
    for part in head:
        parent = getattr(parent, part)
    if isinstance(parent, nn.MultiheadAttention):
        weight = parent.in_proj_weight if leaf == "in_proj" else parent.out_proj.weight
    else:
        weight = getattr(parent, leaf).weight
    rows = weight.shape[0] // 3 if candidate.part else weight.shape[0]
    return int(rows), int(weight.shape[1])


def sigma_total(backbone, targets: str | TargetSpec | dict = "paper") -> int:
    """Trainable σ a target specification gives a backbone: Σ min(rows, columns) over the selected matrices."""
    spec, _ = resolve_spec(targets)
    return sum(min(candidate_shape(backbone.model, c)) for c in select_targets(backbone, spec))
