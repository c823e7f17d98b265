"""Adaptation methods (svd, zero_shot, linear_probe, lora, full): the registry (`registry.py`: name ->
prepare / load / default lr), σ-only SVD (`svd.py`), the LoRA / full baselines (`deltas.py`, on the
weight slices of `targets.py`). See docs/architecture.md, "How to add a method".

Names are imported on first use (PEP 562): listing method names does not import torch."""
from __future__ import annotations

import importlib

_WHERE = {
    "METHODS": "registry", "TRAINED_METHODS": "registry", "DEFAULT_LR": "registry", "METHOD_FILE": "registry",
    "Method": "registry", "get_method": "registry", "prepare_method": "registry", "load_trained": "registry",
    "load_merged": "registry",
    "Prepared": "prepared",
    "CONFIG_FILE": "adapter_folder", "read_method": "adapter_folder",
    "DELTA_FILE": "deltas", "LoRADelta": "deltas", "FullDelta": "deltas",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"medclipsvd.methods.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'medclipsvd.methods' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_WHERE))


__all__ = sorted(_WHERE)
