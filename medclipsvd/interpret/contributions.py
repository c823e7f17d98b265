"""Direct contribution of single attention heads to the image embedding.

The image embedding of a ViT is  e = P · LN(x_L[cls]) (+ bias)  with the residual stream
x_L = x_0 + Σ_l attn_l + Σ_l mlp_l. Each attention output at the class token splits exactly into
per-head terms: attn_l[cls] = Σ_h A_h(cls,·) V_h W_O^h ᵀ + b_O. Following TextSpan, the final
LayerNorm is linearised per image (its mean-centring and its scale 1/std are fixed from the full
x_L of that image), so each head's term maps linearly into the embedding space:

    c_{l,h} = P · (γ ⊙ (r_{l,h} − mean(r_{l,h})) / std(x_L))

We read the normalised input of each attention module with a forward pre-hook and recompute the
class-token query against all keys ourselves from the module's (plain or merged) weights, then check
that the heads sum back to the module's real output, so a structure we do not understand fails
loudly instead of producing wrong pictures. Works for open_clip ViTs (nn.MultiheadAttention), timm ViTs
(attn.qkv / attn.proj) and transformers CLIPVisionModel (self_attn.{q,k,v,out}_proj), which covers CLIP,
BiomedCLIP and CLIPModel folders. Towers pooled by an attention head (SigLIP) are refused: no head's output
reaches the embedding linearly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from medclipsvd.interpret.errors import InterpretError
from medclipsvd.interpret.spectra import AttentionWeights


# ------------------------------------------------------------------------------------------------
# Reading plain attention weights


def attention_weights(block: nn.Module) -> AttentionWeights:
    """Plain weights of a transformer block's self-attention (open_clip, timm or HF BERT layer).

    Expects plain modules: call `merge` on an adapted backbone first.
    """
    attn = getattr(block, "attn", None)
    if isinstance(attn, nn.MultiheadAttention):
        if attn.in_proj_weight is None:
            raise InterpretError("nn.MultiheadAttention with separate q/k/v weights is not supported")
        w, b = attn.in_proj_weight, attn.in_proj_bias
        d = attn.embed_dim
        bias = (lambda i: b[i * d:(i + 1) * d]) if b is not None else (lambda i: None)
        return AttentionWeights(w[:d], w[d:2 * d], w[2 * d:], attn.out_proj.weight, attn.num_heads,
                                bias(0), bias(1), bias(2), attn.out_proj.bias)
    if attn is not None and hasattr(attn, "qkv") and hasattr(attn, "proj") and isinstance(attn.qkv, nn.Linear):
        a = attn.qkv.out_features // 3
        w, b = attn.qkv.weight, attn.qkv.bias
        bias = (lambda i: b[i * a:(i + 1) * a]) if b is not None else (lambda i: None)
        return AttentionWeights(w[:a], w[a:2 * a], w[2 * a:], attn.proj.weight, attn.num_heads,
                                bias(0), bias(1), bias(2), attn.proj.bias)
    hf = getattr(block, "self_attn", None)  # transformers CLIP / SigLIP encoder layer
    if hf is not None and all(isinstance(getattr(hf, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj",
                                                                                      "out_proj")):
        return AttentionWeights(hf.q_proj.weight, hf.k_proj.weight, hf.v_proj.weight, hf.out_proj.weight,
                                int(hf.num_heads), hf.q_proj.bias, hf.k_proj.bias, hf.v_proj.bias, hf.out_proj.bias)
    att = getattr(block, "attention", None)
    sa = getattr(att, "self", None)
    if sa is not None and all(isinstance(getattr(sa, n, None), nn.Linear) for n in ("query", "key", "value")):
        out = att.output.dense
        return AttentionWeights(sa.query.weight, sa.key.weight, sa.value.weight, out.weight,
                                sa.num_attention_heads, sa.query.bias, sa.key.bias, sa.value.bias, out.bias)
    raise InterpretError(
        f"cannot read attention weights from a {type(block).__name__} block (attention module "
        f"{type(attn or att).__name__}): expected plain nn.MultiheadAttention, timm Attention, a transformers "
        "CLIP / SigLIP layer or a BERT layer. Merge an adapted backbone (medclipsvd.svd.merge) before "
        "reading its weights.")


# ------------------------------------------------------------------------------------------------
# Locating the parts of a vision tower

ATTENTION_POOL = (
    "the vision tower pools its tokens with an attention head (SigLIP's multi-head attention pooling and MLP), "
    "so no attention head of the tower contributes linearly to the image embedding and TextSpan cannot describe "
    "heads; run `medclipsvd interpret` without --images / --dataset for the weight views (σ changes, head "
    "spectra), which work for this model")


@dataclass
class VisionParts:
    blocks: list[nn.Module]
    attns: list[nn.Module]           # the attention module of each block (hooked)
    layer_scales: list[nn.Module]    # LayerScale after attention (Identity for CLIP / BiomedCLIP)
    final_norm: nn.LayerNorm
    project: Callable[[torch.Tensor], torch.Tensor]   # linear part of the projection, [.., d] -> [.., D]
    proj_bias: torch.Tensor | None
    cls_index: int = 0


def vision_parts(visual: nn.Module) -> VisionParts:
    """Find blocks, final LayerNorm and projection of an open_clip or timm (open_clip TimmModel)
    vision tower; raise InterpretError for pooling that TextSpan's class-token view cannot explain."""
    if hasattr(visual, "transformer") and hasattr(visual, "ln_post"):           # open_clip ViT
        if getattr(visual, "attn_pool", None) is not None:
            raise InterpretError("open_clip towers with attention pooling are not supported")
        if getattr(visual, "pool_type", "tok") != "tok":
            raise InterpretError(f"open_clip pool_type {visual.pool_type!r}: only class-token pooling "
                                 "('tok') has per-head class-token contributions")
        blocks = list(visual.transformer.resblocks)
        proj = visual.proj
        project = (lambda x: x @ proj) if proj is not None else (lambda x: x)
        return VisionParts(blocks, [b.attn for b in blocks], [b.ls_1 for b in blocks], visual.ln_post,
                           project, None)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "norm"):   # open_clip TimmModel
        if getattr(trunk, "attn_pool", None) is not None:
            raise InterpretError(ATTENTION_POOL)
        if getattr(trunk, "global_pool", "token") != "token":
            raise InterpretError(f"timm global_pool {getattr(trunk, 'global_pool', None)!r}: only class-token "
                                 "pooling has per-head class-token contributions")
        for name in ("fc_norm", "head"):
            if not isinstance(getattr(trunk, name, nn.Identity()), nn.Identity):
                raise InterpretError(f"timm trunk has a non-identity {name}; not supported")
        head = getattr(visual, "head", nn.Identity())
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        others = [m for m in head.modules() if not isinstance(m, (nn.Linear, nn.Sequential, nn.Dropout, nn.Identity))]
        if len(linears) > 1 or others:
            raise InterpretError("timm tower head is not a single linear projection; not supported")
        if linears:
            lin = linears[0]
            project, bias = (lambda x: x @ lin.weight.T), lin.bias
        else:
            project, bias = (lambda x: x), None
        blocks = list(trunk.blocks)
        return VisionParts(blocks, [b.attn for b in blocks], [b.ls1 for b in blocks], trunk.norm,
                           project, bias, 0)
    model = getattr(visual, "model", None)
    if model is not None and hasattr(model, "encoder") and hasattr(model, "post_layernorm"):  # transformers
        if getattr(model, "head", None) is not None:
            raise InterpretError(ATTENTION_POOL)
        # CLIPVisionModel: post_layernorm(last_hidden_state[:, 0]), then the tower's visual_projection
        proj = getattr(visual, "proj", None)
        project = (lambda x: x @ proj.weight.T) if proj is not None else (lambda x: x)
        blocks = list(model.encoder.layers)
        return VisionParts(blocks, [b.self_attn for b in blocks], [nn.Identity() for _ in blocks],
                           model.post_layernorm, project, getattr(proj, "bias", None), 0)
    raise InterpretError(f"unsupported vision tower {type(visual).__name__}: expected an open_clip "
                         "VisionTransformer or TimmModel, or a transformers CLIP vision model")


def _layer_scale(ls: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return ls(x)  # LayerScale is elementwise and linear, so applying it per head is exact


# ------------------------------------------------------------------------------------------------
# Per-head contributions


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    for key in ("query", "x", "hidden_states", "q_x"):
        if key in kwargs:
            return kwargs[key]
    raise InterpretError("could not find the input tensor of an attention module")


def _heads_at_cls(x: torch.Tensor, w: AttentionWeights, cls: int, batch_first: bool) -> torch.Tensor:
    """Per-head outputs at the class token through W_O: [B, H, d] (without the output bias)."""
    if not batch_first:
        x = x.transpose(0, 1)
    b, n, _ = x.shape
    h, hd = w.num_heads, w.head_dim
    lin = lambda t, wt, bias: t @ wt.T + (bias if bias is not None else 0.0)
    q = lin(x[:, cls], w.q, w.bq).view(b, h, hd)
    k = lin(x, w.k, w.bk).view(b, n, h, hd)
    v = lin(x, w.v, w.bv).view(b, n, h, hd)
    att = torch.einsum("bhd,bnhd->bhn", q, k).mul(hd ** -0.5).softmax(dim=-1)
    o = torch.einsum("bhn,bnhd->bhd", att, v)                               # [B, H, hd]
    wo = w.o.view(w.o.shape[0], h, hd)                                       # [d, H, hd]
    return torch.einsum("bhd,ehd->bhe", o, wo)                              # [B, H, d]


class HeadContributionRecorder:
    """Hooks a vision tower and turns each forward pass into per-head embedding contributions.

    Use as a context manager around `encode_image` calls; `heads` selects (layer, head) pairs
    (None = all heads of all layers). Results accumulate in `self.contributions`.
    """

    def __init__(self, visual: nn.Module, heads: Iterable[tuple[int, int]] | None = None,
                 check_tol: float = 1e-3):
        self.parts = vision_parts(visual)
        n_layers = len(self.parts.blocks)
        self.weights = {i: attention_weights(b) for i, b in enumerate(self.parts.blocks)}
        if heads is None:
            heads = [(l, h) for l in range(n_layers) for h in range(self.weights[l].num_heads)]
        self.heads = sorted(set(heads))
        for l, h in self.heads:
            if not (0 <= l < n_layers and 0 <= h < self.weights[l].num_heads):
                raise InterpretError(f"head L{l} H{h} does not exist: the tower has {n_layers} layers of "
                                     f"{self.weights[0].num_heads} heads")
        self.layers = sorted({l for l, _ in self.heads})
        self.check_tol = check_tol
        self.contributions: dict[tuple[int, int], list[torch.Tensor]] = {k: [] for k in self.heads}
        self.max_rel_error = 0.0
        self._inputs: dict[int, torch.Tensor] = {}
        self._outputs: dict[int, torch.Tensor] = {}
        self._final: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> "HeadContributionRecorder":
        for l in self.layers:
            attn = self.parts.attns[l]
            self._handles.append(attn.register_forward_pre_hook(self._pre(l), with_kwargs=True))
            self._handles.append(attn.register_forward_hook(self._post(l)))
        self._handles.append(self.parts.final_norm.register_forward_pre_hook(self._final_hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _pre(self, layer: int):
        def hook(module, args, kwargs):
            self._inputs[layer] = _first_input(args, kwargs).detach()
        return hook

    def _post(self, layer: int):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            self._outputs[layer] = out.detach()
        return hook

    def _final_hook(self, module, args):
        self._final = args[0].detach()
        # The forward may run under bf16 autocast; the decomposition itself is done in float32.
        with torch.autocast(self._final.device.type, enabled=False):
            self._collect()

    def _collect(self) -> None:
        p = self.parts
        cls = p.cls_index
        x_final = self._final.float()
        # open_clip applies ln_post to all tokens ([B, N, d]) or, with final_ln_after_pool, to the
        # pooled token ([B, d]); either way we need the class token's residual stream.
        xl = x_final[:, cls] if x_final.ndim == 3 else x_final
        mu = xl.mean(dim=-1, keepdim=True)
        std = (xl.var(dim=-1, unbiased=False, keepdim=True) + p.final_norm.eps).sqrt()
        gamma = p.final_norm.weight if p.final_norm.weight is not None else 1.0
        to_embedding = lambda r: p.project(gamma * (r - r.mean(dim=-1, keepdim=True)) / std[:, None])
        for l in self.layers:
            attn = p.attns[l]
            batch_first = getattr(attn, "batch_first", True)
            x = self._inputs.pop(l).float()
            out = self._outputs.pop(l).float()
            if not batch_first:
                out = out.transpose(0, 1)
            w = self.weights[l]
            per_head = _heads_at_cls(x, w, cls, batch_first)                  # [B, H, d]
            # The heads plus the output bias must give the module's own class-token output.
            rebuilt = per_head.sum(dim=1) + (w.bo if w.bo is not None else 0.0)
            real = out[:, cls]
            err = float((rebuilt - real).norm() / real.norm().clamp_min(1e-12))
            self.max_rel_error = max(self.max_rel_error, err)
            if err > self.check_tol:
                raise InterpretError(
                    f"per-head outputs of vision layer {l} do not add up to the attention output "
                    f"(relative error {err:.2e}); the attention module ({type(attn).__name__}) computes "
                    "something this analysis does not model (qk-norm, masks, gating?)")
            residual = _layer_scale(p.layer_scales[l], per_head)                  # [B, H, d]
            emb = to_embedding(residual)                                          # [B, H, D]
            for (ll, h) in self.heads:
                if ll == l:
                    self.contributions[(l, h)].append(emb[:, h].float().cpu())
        self._final = None

    def result(self) -> dict[tuple[int, int], torch.Tensor]:
        return {k: torch.cat(v) if v else torch.empty(0) for k, v in self.contributions.items()}


def linearised_embedding(visual: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embedding from the linearised final LayerNorm applied to the whole residual stream + the
    LayerNorm shift and projection bias, the tower's own output) for a batch; they must agree if
    `vision_parts` found the right final norm, pooling token and projection."""
    p = vision_parts(visual)
    store = {}
    handle = p.final_norm.register_forward_pre_hook(lambda m, a: store.__setitem__("x", a[0].detach()))
    try:
        real = visual(x)
    finally:
        handle.remove()
    xl = store["x"][:, p.cls_index] if store["x"].ndim == 3 else store["x"]
    normed = torch.nn.functional.layer_norm(xl, xl.shape[-1:], p.final_norm.weight, p.final_norm.bias,
                                            p.final_norm.eps)
    rebuilt = p.project(normed) + (p.proj_bias if p.proj_bias is not None else 0.0)
    return rebuilt, real
