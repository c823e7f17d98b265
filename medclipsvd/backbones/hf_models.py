"""transformers CLIPModel / SiglipModel behind the interface the rest of medclipsvd uses for open_clip models:
`visual(images)` and `text(tokens)` give the embeddings, `logit_scale` (log) and `logit_bias` are parameters.

The transformers modules are kept as they are (their encoder layers hold self_attn.{q,k,v,out}_proj and
mlp.fc1/fc2, which `architectures.PATTERNS` targets); only the state-dict names gain a tower prefix, and
`from_hf_state` maps a checkpoint's names onto them."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

# checkpoint name prefix (transformers) -> name in HFDualEncoder
PREFIXES = (("vision_model.", "visual.model."), ("visual_projection.", "visual.proj."),
            ("text_model.", "text.model."), ("text_projection.", "text.proj."))
OWN_PREFIXES = ("visual.", "text.", "logit_scale", "logit_bias")


class HFTower(nn.Module):
    """One tower: the transformers model, then its projection (CLIP) or nothing (SigLIP: the model's head)."""

    def __init__(self, model: nn.Module, proj: nn.Module | None, inputs: str):
        super().__init__()
        self.model = model
        self.proj = proj
        self.inputs = inputs  # "pixel_values" or "input_ids"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.model(**{self.inputs: x}).pooler_output
        return self.proj(pooled) if self.proj is not None else pooled


class HFDualEncoder(nn.Module):
    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.visual = HFTower(hf_model.vision_model, getattr(hf_model, "visual_projection", None), "pixel_values")
        self.text = HFTower(hf_model.text_model, getattr(hf_model, "text_projection", None), "input_ids")
        self.logit_scale = hf_model.logit_scale
        self.logit_bias = getattr(hf_model, "logit_bias", None)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)


def build(model_cfg: dict[str, Any]) -> HFDualEncoder:
    """The model of a transformers config dict, with transformers' own (seeded by the caller) initialisation."""
    import transformers

    config = dict(model_cfg["hf_config"])
    cls = {"clip": (transformers.CLIPConfig, transformers.CLIPModel),
           "siglip": (transformers.SiglipConfig, transformers.SiglipModel)}[config["model_type"]]
    hf_config = cls[0].from_dict(config)
    # one attention implementation everywhere: the same numbers on every machine, exact after adaptation
    hf_config._attn_implementation = "sdpa"
    for sub in (hf_config.text_config, hf_config.vision_config):
        sub._attn_implementation = "sdpa"
    return HFDualEncoder(cls[1](hf_config))


def from_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers checkpoint's tensors under HFDualEncoder's names (names already in that form, e.g. a
    state dict bundled by medclipsvd, pass unchanged)."""
    out = {}
    for key, value in state.items():
        for old, new in PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out
