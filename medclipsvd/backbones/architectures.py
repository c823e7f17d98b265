"""Where the transformer blocks and their weight matrices live, found in the built model.

A few block patterns (open_clip, timm ViT, BERT, transformers CLIP/SigLIP) are data; which ModuleList of a tower
holds the blocks, how
many there are and their widths come from the model itself, so any open_clip ViT size works without a list
of names. Targeting (which matrices get σ-adapted) is built on the layouts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MATRICES = ("q", "k", "v", "o", "fc1", "fc2")
TOWERS = ("vision", "text")


@dataclass(frozen=True)
class TowerLayout:
    blocks: str
    """Dotted path of the ModuleList of transformer blocks."""
    attention: Literal["mha", "fused", "separate"]
    """mha: nn.MultiheadAttention (fused in_proj_weight); fused: one Linear for q, k, v; separate: three Linears."""
    paths: dict[str, str]
    """Module path inside a block, per matrix kind ("qkv" for the two fused forms)."""
    heads_attr: str
    """Attribute path, inside a block, of the number of attention heads."""


@dataclass(frozen=True)
class BlockPattern:
    """How one kind of transformer block holds its matrices; matched against the built model."""

    kind: str
    attention: Literal["mha", "fused", "separate"]
    paths: dict[str, str]
    heads_attr: str


PATTERNS: tuple[BlockPattern, ...] = (
    # open_clip's ResidualAttentionBlock (both towers of its CLIP ViTs)
    BlockPattern("open_clip ResidualAttentionBlock", "mha",
                 {"qkv": "attn", "o": "attn.out_proj", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj"}, "attn.num_heads"),
    # timm's ViT Block (BiomedCLIP's image tower)
    BlockPattern("timm ViT Block", "fused",
                 {"qkv": "attn.qkv", "o": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}, "attn.num_heads"),
    # Hugging Face BERT layer (BiomedCLIP's text tower)
    BlockPattern("BERT layer", "separate",
                 {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                  "o": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"},
                 "attention.self.num_attention_heads"),
    # Hugging Face transformers CLIP / SigLIP encoder layer (CLIPModel, SiglipModel: both towers)
    BlockPattern("transformers CLIP/SigLIP encoder layer", "separate",
                 {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
                  "fc1": "mlp.fc1", "fc2": "mlp.fc2"}, "self_attn.num_heads"),
)


def _resolve(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _missing(block, pattern: BlockPattern) -> list[str]:
    """Paths of `pattern` that `block` lacks or holds in another form (empty: the block matches)."""
    from torch import nn

    missing = []
    for key, path in pattern.paths.items():
        module = _resolve(block, path)
        if key == "qkv" and pattern.attention == "mha":
            ok = isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim
        elif key == "qkv":
            ok = isinstance(module, nn.Linear) and module.out_features == 3 * module.in_features
        else:
            ok = isinstance(module, nn.Linear)
        if not ok:
            missing.append(path)
    if _resolve(block, pattern.heads_attr) is None:
        missing.append(pattern.heads_attr)
    return missing


def tower_root(model, tower: str) -> str:
    """Module path of a tower: `visual`; `text` (open_clip CustomTextCLIP, transformers models through
    hf_models.HFDualEncoder) or the top level (open_clip CLIP)."""
    if tower == "vision":
        return "visual"
    return "text" if hasattr(model, "text") else ""


def discover_layout(model, tower: str, where: str = "the model") -> TowerLayout:
    """Find the transformer blocks of `tower` in a built open_clip model and how they hold q, k, v, o and the
    MLP matrices: the longest ModuleList (or Sequential) in the tower whose blocks all match one known pattern."""
    from torch import nn

    from medclipsvd.backbones.openclip_arch import UnsupportedArchitectureError

    root = tower_root(model, tower)
    prefix = f"{root}." if root else ""
    best, closest = None, None
    for path, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or not len(module):  # timm: Sequential
            continue
        if not path.startswith(prefix) or (tower == "text" and not root and path.startswith("visual.")):
            continue
        for pattern in PATTERNS:
            gaps = [_missing(block, pattern) for block in module]
            if not any(gaps):
                if best is None or len(module) > len(best[1]):
                    best = (path, module, pattern)
            elif closest is None or len(gaps[0]) < len(closest[2]):
                closest = (path, pattern, gaps[0], type(module[0]).__name__)
    if best is None:
        detail = (f"closest: {closest[0]} ({closest[3]} blocks) lacks {', '.join(closest[2])} of the "
                  f"{closest[1].kind} pattern" if closest else "no list of blocks found")
        raise UnsupportedArchitectureError(
            f"the {tower} tower of {where} has no transformer blocks medclipsvd can target ({detail}); supported "
            f"blocks: {', '.join(p.kind for p in PATTERNS)}")
    path, _, pattern = best
    return TowerLayout(blocks=path, attention=pattern.attention, paths=dict(pattern.paths),
                       heads_attr=pattern.heads_attr)


def discover_layouts(model, where: str = "the model") -> dict[str, TowerLayout]:
    return {tower: discover_layout(model, tower, where) for tower in TOWERS}


def tower_of_parameter(name: str) -> str:
    """'vision', 'text' or 'other' (logit scale/bias) for a parameter name of a backbone's model."""
    if name.startswith("visual."):
        return "vision"
    if name.startswith("logit_"):
        return "other"
    return "text"
