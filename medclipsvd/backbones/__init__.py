"""Backbone registry and factory (open_clip style): `list_backbones()`, `load_backbone(name, ...)`."""
from medclipsvd.backbones.backbone import Backbone, load_backbone
from medclipsvd.backbones.registry import BackboneSpec, get_spec, list_backbones

__all__ = ["Backbone", "BackboneSpec", "get_spec", "list_backbones", "load_backbone"]
