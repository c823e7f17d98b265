"""Where the transformer blocks and their weight matrices live in each backbone family.

This is data about the architectures; targeting (which matrices get σ-adapted) is built on it."""
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


ARCHITECTURES: dict[str, dict[str, TowerLayout]] = {
    # open_clip's two towers use the same ResidualAttentionBlock
    "openclip-vit": {
        tower: TowerLayout(
            blocks=blocks, attention="mha",
            paths={"qkv": "attn", "o": "attn.out_proj", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj"},
            heads_attr="attn.num_heads")
        for tower, blocks in (("vision", "visual.transformer.resblocks"), ("text", "transformer.resblocks"))
    },
    "timm-bert": {
        "vision": TowerLayout(
            blocks="visual.trunk.blocks", attention="fused",
            paths={"qkv": "attn.qkv", "o": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"},
            heads_attr="attn.num_heads"),
        "text": TowerLayout(
            blocks="text.transformer.encoder.layer", attention="separate",
            paths={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                   "o": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"},
            heads_attr="attention.self.num_attention_heads"),
    },
}


def tower_of_parameter(name: str) -> str:
    """'vision', 'text' or 'other' (logit scale/bias) for a parameter name of an open_clip model."""
    if name.startswith("visual."):
        return "vision"
    if name.startswith("logit_"):
        return "other"
    return "text"
