"""A two-tower toy with the Backbone interface that `adapt`, targeting and adapter files use, built from the
block patterns medclipsvd targets (a timm-style fused q/k/v Linear in the vision tower, open_clip's
nn.MultiheadAttention blocks or BERT-style separate q/k/v Linears in the text tower) at width 8: building and
adapting it costs milliseconds, so the σ-layer, targeting and adapter-file tests (and mutation testing of
svd/) need no tiny-clip. Imported by the fast svd tests through sys.path (uniquely named module)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

WIDTH = 8
HIDDEN = 12   # MLP width != WIDTH so that fc1/fc2 shapes differ from the attention matrices
HEADS = 2


class _Mlp(nn.Module):
    def __init__(self, first: str, second: str):
        super().__init__()
        setattr(self, first, nn.Linear(WIDTH, HIDDEN))
        setattr(self, second, nn.Linear(HIDDEN, WIDTH))
        self._names = (first, second)

    def forward(self, x):
        a, b = self._names
        return getattr(self, b)(torch.nn.functional.gelu(getattr(self, a)(x)))


class _FusedAttention(nn.Module):
    """timm's Attention: one qkv Linear (3·WIDTH rows: q, k, v blocks) and an output `proj`."""

    def __init__(self):
        super().__init__()
        self.num_heads = HEADS
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(B, L, D))


class FusedBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)  # a parameter no target touches: adapt must freeze it
        self.attn = _FusedAttention()
        self.mlp = _Mlp("fc1", "fc2")

    def forward(self, x):
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


class MhaBlock(nn.Module):
    """open_clip's ResidualAttentionBlock: nn.MultiheadAttention (sequence-first) and mlp.c_fc / c_proj."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(WIDTH, HEADS)
        self.mlp = _Mlp("c_fc", "c_proj")

    def forward(self, x):
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)  # True: masked out
        y = x.transpose(0, 1)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=causal)[0].transpose(0, 1)
        return x + self.mlp(x)


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.num_heads = HEADS
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(WIDTH, WIDTH) for _ in range(4))

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = (p(x).view(B, L, HEADS, D // HEADS).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out_proj(o.transpose(1, 2).reshape(B, L, D))


class SeparateBlock(nn.Module):
    """transformers' CLIP encoder layer: q_proj, k_proj, v_proj, out_proj and mlp.fc1 / fc2."""

    def __init__(self):
        super().__init__()
        self.self_attn = _SelfAttention()
        self.mlp = _Mlp("fc1", "fc2")

    def forward(self, x):
        x = x + self.self_attn(x)
        return x + self.mlp(x)


class _Visual(nn.Module):
    def __init__(self, layers: int):
        super().__init__()
        self.blocks = nn.Sequential(*(FusedBlock() for _ in range(layers)))


class _Text(nn.Module):
    def __init__(self, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(SeparateBlock() for _ in range(layers))


class ToyModel(nn.Module):
    def __init__(self, vision_layers: int, text_layers: int, text: str):
        super().__init__()
        self.visual = _Visual(vision_layers)
        if text == "mha":  # open_clip CLIP: the text blocks live at the top level
            self.transformer = nn.Module()
            self.transformer.resblocks = nn.ModuleList(MhaBlock() for _ in range(text_layers))
        else:
            self.text = _Text(text_layers)

    def text_blocks(self):
        return self.transformer.resblocks if hasattr(self, "transformer") else self.text.layers

    def forward(self, image_tokens, text_tokens):
        for block in self.visual.blocks:
            image_tokens = block(image_tokens)
        for block in self.text_blocks():
            text_tokens = block(text_tokens)
        return image_tokens, text_tokens


class ToySVDBackbone(nn.Module):
    """What svd/ needs of a Backbone: name, source, model, fingerprint(), layout(), num_layers()."""

    def __init__(self, seed: int = 0, vision_layers: int = 3, text_layers: int = 2, text: str = "mha",
                 name: str = "toy-svd", source: str | None = "toy-weights"):
        super().__init__()
        from medclipsvd.backbones.architectures import discover_layouts

        with torch.random.fork_rng(devices=[]):  # the weights depend on the seed only; the global RNG is left alone
            torch.manual_seed(seed)
            self.model = ToyModel(vision_layers, text_layers, text)
        self.name = name
        self.source = source
        self._layouts = discover_layouts(self.model)
        self._fingerprint = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:  # like Backbone: of the weights as they are at the first call
            from medclipsvd.backbones.fingerprint import state_fingerprint

            self._fingerprint = state_fingerprint(self.model.state_dict())
        return self._fingerprint

    def layout(self, tower: str):
        return self._layouts[tower]

    def num_layers(self, tower: str) -> int:
        module = self.model
        for part in self._layouts[tower].blocks.split("."):
            module = getattr(module, part)
        return len(module)

    def forward(self, image_tokens, text_tokens):
        return self.model(image_tokens, text_tokens)


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, WIDTH, generator=g), torch.randn(2, 4, WIDTH, generator=g)


def sliced_weights(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """{target name: weight matrix} read straight from the plain modules, by hand (no medclipsvd code)."""
    out = OrderedDict()
    for i, block in enumerate(model.visual.blocks):
        p = f"visual.blocks.{i}"
        w = block.attn.qkv.weight
        for j, part in enumerate("qkv"):
            out[f"{p}.attn.qkv.{part}"] = w[j * WIDTH:(j + 1) * WIDTH]
        out[f"{p}.attn.proj"] = block.attn.proj.weight
        out[f"{p}.mlp.fc1"] = block.mlp.fc1.weight
        out[f"{p}.mlp.fc2"] = block.mlp.fc2.weight
    if hasattr(model, "transformer"):
        for i, block in enumerate(model.transformer.resblocks):
            p = f"transformer.resblocks.{i}"
            for j, part in enumerate("qkv"):
                out[f"{p}.attn.in_proj.{part}"] = block.attn.in_proj_weight[j * WIDTH:(j + 1) * WIDTH]
            out[f"{p}.attn.out_proj"] = block.attn.out_proj.weight
            out[f"{p}.mlp.c_fc"] = block.mlp.c_fc.weight
            out[f"{p}.mlp.c_proj"] = block.mlp.c_proj.weight
    else:
        for i, block in enumerate(model.text.layers):
            p = f"text.layers.{i}"
            for m in ("q_proj", "k_proj", "v_proj", "out_proj"):
                out[f"{p}.self_attn.{m}"] = getattr(block.self_attn, m).weight
            out[f"{p}.mlp.fc1"] = block.mlp.fc1.weight
            out[f"{p}.mlp.fc2"] = block.mlp.fc2.weight
    return out
