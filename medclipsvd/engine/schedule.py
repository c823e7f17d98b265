"""Learning-rate schedules. The default is one cosine decay over the whole run. `reference_schedule`
reproduces the reference code, which built CosineAnnealingLR(T_max=train_epochs) but stepped it every
iteration, so the rate oscillates with a period of 2*train_epochs iterations (reference doc section 2)."""
from __future__ import annotations

import math

import torch


def cosine_lr(step: int, base_lr: float, t_max: int, eta_min: float = 1e-6) -> float:
    """Closed form of cosine annealing; periodic in `step` with period 2*t_max, like torch's."""
    return eta_min + (base_lr - eta_min) * (1.0 + math.cos(math.pi * step / t_max)) / 2.0


def make_scheduler(optimizer: torch.optim.Optimizer, t_max: int, eta_min: float = 1e-6
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler. The closed form (not torch's recursive update) keeps resumed runs exact."""
    if t_max < 1:
        raise ValueError(f"t_max must be >= 1, got {t_max}")
    base = [g["lr"] for g in optimizer.param_groups]

    def factor(i: int):
        return lambda step: cosine_lr(step, base[i], t_max, eta_min) / base[i]

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(base))])


def lr_sequence(base_lr: float, t_max: int, steps: int, eta_min: float = 1e-6) -> list[float]:
    """The learning rate used at each of `steps` iterations."""
    return [cosine_lr(s, base_lr, t_max, eta_min) for s in range(steps)]
