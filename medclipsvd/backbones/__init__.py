"""Backbone registry and factory (open_clip style): `list_backbones()`, `load_backbone(name, ...)`.

`Backbone` and `load_backbone` (torch, open_clip) are imported on first use so that listing the registry
stays cheap."""
from __future__ import annotations

import importlib

from medclipsvd.backbones.registry import BackboneSpec, get_spec, list_backbones

_LAZY = {"Backbone": "medclipsvd.backbones.backbone", "load_backbone": "medclipsvd.backbones.backbone"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medclipsvd.backbones' has no attribute {name!r}")


__all__ = ["Backbone", "BackboneSpec", "get_spec", "list_backbones", "load_backbone"]
