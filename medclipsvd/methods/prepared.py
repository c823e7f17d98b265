"""What preparing a backbone for a method gives the trainer: its trainable parameters, how to save and
merge them (`Prepared`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn


@dataclass
class Prepared:
    """A backbone made trainable by one method."""

    method: str
    params: dict[str, nn.Parameter]
    text_trainable: bool
    lr: float
    save: Callable[[Path], Path]
    merge: Callable[[], None]
    info: dict = field(default_factory=dict)

    @property
    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.params.values())


def _freeze(backbone: nn.Module) -> None:
    for p in backbone.parameters():
        p.requires_grad_(False)
