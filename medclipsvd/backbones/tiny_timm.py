"""Tiny timm ViTs registered with timm so that open_clip's timm tower can build them by name:
`medclipsvd_tiny_vit` has the module structure of `vit_base_patch16_224` (the `tiny-biomedclip` image tower),
`medclipsvd_tiny_siglip_vit` that of `vit_base_patch16_siglip_224` (no class token, attention-pool head; the
`tiny-siglip` image tower)."""
from __future__ import annotations

from timm.models import VisionTransformer, build_model_with_cfg, is_model, register_model

NAME = "medclipsvd_tiny_vit"
SIGLIP_NAME = "medclipsvd_tiny_siglip_vit"


def _build(name: str, pretrained: bool, args: dict, kwargs: dict) -> VisionTransformer:
    if pretrained:
        raise ValueError(f"{name} is a test architecture with random weights only")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    return build_model_with_cfg(VisionTransformer, name, pretrained=False,
                                pretrained_cfg={"architecture": name, "num_classes": 0}, **{**args, **kwargs})


def _tiny_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    args = dict(img_size=224, patch_size=16, embed_dim=64, depth=6, num_heads=4, mlp_ratio=4.0)
    return _build(NAME, pretrained, args, kwargs)


def _tiny_siglip_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    args = dict(img_size=224, patch_size=16, embed_dim=64, depth=6, num_heads=4, mlp_ratio=4.0, class_token=False,
                global_pool="map")
    return _build(SIGLIP_NAME, pretrained, args, kwargs)


_tiny_vit.__name__ = NAME
_tiny_siglip_vit.__name__ = SIGLIP_NAME
if not is_model(NAME):
    register_model(_tiny_vit)
if not is_model(SIGLIP_NAME):
    register_model(_tiny_siglip_vit)
