"""Locate the weight matrices a target specification selects on an un-adapted backbone, as
(module, parameter, row range), for the baselines (LoRA, full fine-tuning) that change weights directly
instead of through singular values. Selection and names are the core's (medclipsvd.svd.select_targets),
so a LoRA or full run touches exactly the matrices an SVD run with the same spec would."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

MATRICES = ("q", "k", "v", "o", "fc1", "fc2")


@dataclass(frozen=True)
class WeightSlice:
    name: str           # the core's target name, e.g. visual.trunk.blocks.3.attn.qkv.v
    tower: str
    layer: int
    matrix: str
    module: nn.Module   # owner of the parameter
    param: str          # "weight" or "in_proj_weight"
    rows: tuple[int, int] | None  # row range inside a fused q/k/v matrix

    @property
    def shape(self) -> tuple[int, int]:
        w = getattr(self.module, self.param)
        out = w.shape[0] if self.rows is None else self.rows[1] - self.rows[0]
        return int(out), int(w.shape[1])


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def weight_slices(backbone, layers="all", matrices=MATRICES, towers: str = "both") -> list[WeightSlice]:
    from medclipsvd.svd import TargetSpec, select_targets

    spec = TargetSpec(towers=towers, layers=layers, matrices=tuple(matrices))
    out = []
    for c in select_targets(backbone, spec):
        if c.part:
            if c.slot.endswith(".in_proj"):  # nn.MultiheadAttention keeps q, k, v in in_proj_weight
                module, param = _get(backbone.model, c.slot.rsplit(".", 1)[0]), "in_proj_weight"
            else:
                module, param = _get(backbone.model, c.slot), "weight"
            d = getattr(module, param).shape[0] // 3
            start = "qkv".index(c.part) * d
            rows = (start, start + d)
        else:
            module, param, rows = _get(backbone.model, c.slot), "weight", None
        out.append(WeightSlice(c.name, c.tower, c.layer, c.matrix, module, param, rows))
    return out
