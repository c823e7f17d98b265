"""A tiny timm ViT with the module structure of `vit_base_patch16_224`, registered with timm so that
open_clip's timm tower can build it by name (the `tiny-biomedclip` image tower)."""
from __future__ import annotations

from timm.models import VisionTransformer, build_model_with_cfg, is_model, register_model

NAME = "medclipsvd_tiny_vit"


def _tiny_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    if pretrained:
        raise ValueError(f"{NAME} is a test architecture with random weights only")
    args = dict(img_size=224, patch_size=16, embed_dim=64, depth=6, num_heads=4, mlp_ratio=4.0)
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    args.update(kwargs)
    return build_model_with_cfg(VisionTransformer, NAME, pretrained=False,
                                pretrained_cfg={"architecture": NAME, "num_classes": 0}, **args)


_tiny_vit.__name__ = NAME
if not is_model(NAME):
    register_model(_tiny_vit)
