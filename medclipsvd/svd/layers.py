"""σ-adapted modules: `SVDLinear` (a Linear whose row blocks are frozen or σ-adapted) and
`SVDSelfAttention` (stands in for nn.MultiheadAttention so that q, k, v can be adapted separately).

Each adapted block computes W = U·diag(σ)·Vhᵀ with U, Vh frozen and σ trainable, by whichever of two exact
forms costs fewer FLOPs for the call at hand:

* factorised: y = ((x·Vhᵀ)·σ)·Uᵀ — 2·N·r·(in+out) for forward and backward;
* rebuilt:    W = (U·σ)·Vh once, then y = x·Wᵀ — 2·out·r·in + 3·N·in·out (the extra N·in·out is ∂W).

For the 4d×d MLP matrices the factorised form always wins; for d×d matrices the rebuilt weight wins once
the call has more than about 2d tokens (every image batch of a ViT-B/16), while short prompt batches stay
factorised. Without gradients (evaluation) the comparison is out·r·in + N·in·out against N·r·(in+out).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medclipsvd.svd.decompose import Factors

Mode = Literal["auto", "factorised", "rebuilt"]


def _suffix(part: str) -> str:
    return f"_{part}" if part else ""


class SVDLinear(nn.Module):
    """y = x·Wᵀ + b with W the row-wise stack of `parts` (equal row counts, in order).

    parts: part name -> Factors (σ-adapted) or None (frozen). A whole Linear has the single part ""; a
    fused q/k/v projection has parts "q", "k", "v"."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, parts: dict[str, Factors | None],
                 mode: Mode = "auto"):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.part_names = list(parts)
        self.adapted_parts = [p for p, f in parts.items() if f is not None]
        self.mode: Mode = mode
        rows = self.out_features // len(parts)
        if rows * len(parts) != self.out_features:
            raise ValueError(f"cannot split {self.out_features} rows into {len(parts)} equal parts")
        for i, (part, factors) in enumerate(parts.items()):
            s = _suffix(part)
            if factors is None:
                self.register_buffer("frozen" + s, weight[i * rows:(i + 1) * rows].detach().clone())
            else:
                self.register_buffer("U" + s, factors.U)
                self.register_buffer("Vh" + s, factors.Vh)
                self.register_buffer("sigma0" + s, factors.S.detach().clone())
                self.register_parameter("sigma" + s, nn.Parameter(factors.S.detach().clone()))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    # access ---------------------------------------------------------------------------------------
    def sigma_of(self, part: str = "") -> nn.Parameter:
        return getattr(self, "sigma" + _suffix(part))

    def sigma0_of(self, part: str = "") -> torch.Tensor:
        return getattr(self, "sigma0" + _suffix(part))

    def factors(self, part: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = _suffix(part)
        return getattr(self, "U" + s), self.sigma_of(part), getattr(self, "Vh" + s)

    def part_weight(self, part: str = "") -> torch.Tensor:
        if part in self.adapted_parts:
            U, S, Vh = self.factors(part)
            return (U * S) @ Vh
        return getattr(self, "frozen" + _suffix(part))

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight, for code that reads `.weight` of a Linear (it is rebuilt on each access)."""
        return self.effective_weight()

    def effective_weight(self) -> torch.Tensor:
        blocks = [self.part_weight(p) for p in self.part_names]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, 0)

    # cost model -----------------------------------------------------------------------------------
    def uses_rebuilt_weight(self, n_tokens: int, grad: bool) -> bool:
        """True when rebuilding W is cheaper than the factorised form for a call with `n_tokens` rows."""
        if self.mode != "auto":
            return self.mode == "rebuilt"
        o = self.out_features // len(self.part_names)
        i = self.in_features
        r = min(o, i)
        k = len(self.adapted_parts)
        frozen_rows = o * (len(self.part_names) - k)
        if grad:
            rebuilt = k * 2 * o * r * i + 3 * n_tokens * i * self.out_features
            factorised = k * 2 * n_tokens * r * (i + o) + 2 * n_tokens * i * frozen_rows
        else:
            rebuilt = k * o * r * i + n_tokens * i * self.out_features
            factorised = k * n_tokens * r * (i + o) + n_tokens * i * frozen_rows
        return rebuilt < factorised

    # computation ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_tokens = x.numel() // x.shape[-1]
        grad = torch.is_grad_enabled() and any(self.sigma_of(p).requires_grad for p in self.adapted_parts)
        if self.uses_rebuilt_weight(n_tokens, grad):
            return F.linear(x, self.effective_weight(), self.bias)
        outs = []
        for part in self.part_names:
            if part in self.adapted_parts:
                U, S, Vh = self.factors(part)
                outs.append(F.linear(F.linear(x, Vh) * S, U))
            else:
                outs.append(F.linear(x, getattr(self, "frozen" + _suffix(part))))
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return y if self.bias is None else y + self.bias

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain nn.Linear with the adapted weight (computed in float64, stored in the model's dtype)."""
        ref = next(self.buffers())  # U or a frozen block: the model's dtype and device
        blocks = []
        for part in self.part_names:
            if part in self.adapted_parts:
                U, S, Vh = (t.double() for t in self.factors(part))
                blocks.append((U * S) @ Vh)
            else:
                blocks.append(getattr(self, "frozen" + _suffix(part)).double())
        weight = torch.cat(blocks, 0)
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=ref.device, dtype=ref.dtype)
        linear.weight.copy_(weight)
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        linear.requires_grad_(False)
        return linear

    def extra_repr(self) -> str:
        parts = ", ".join(p or "weight" for p in self.adapted_parts)
        return f"in={self.in_features}, out={self.out_features}, adapted=[{parts}], mode={self.mode}"


class SVDSelfAttention(nn.Module):
    """Self-attention with the call signature of nn.MultiheadAttention (as open_clip uses it) whose input
    and output projections may be `SVDLinear`s. Attention itself runs through the fused
    `scaled_dot_product_attention` kernel."""

    def __init__(self, mha: nn.MultiheadAttention, in_proj: nn.Module, out_proj: nn.Module):
        super().__init__()
        self.embed_dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.head_dim = mha.embed_dim // mha.num_heads
        self.dropout = mha.dropout
        self.batch_first = mha.batch_first
        self.in_proj = in_proj
        self.out_proj = out_proj

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise NotImplementedError("SVDSelfAttention supports self-attention only")
        if need_weights or key_padding_mask is not None:
            raise NotImplementedError("SVDSelfAttention returns no attention weights and takes no padding mask")
        x = query if self.batch_first else query.transpose(0, 1)
        B, L, D = x.shape
        qkv = self.in_proj(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if attn_mask is not None:
            # nn.MultiheadAttention: True = masked out; SDPA: True = may attend. Float masks are additive in both.
            attn_mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        o = self.out_proj(o.transpose(1, 2).reshape(B, L, D))
        return (o if self.batch_first else o.transpose(0, 1)), None

    @torch.no_grad()
    def merge(self) -> nn.MultiheadAttention:
        in_proj = self.in_proj.merge() if isinstance(self.in_proj, SVDLinear) else self.in_proj
        out_proj = self.out_proj.merge() if isinstance(self.out_proj, SVDLinear) else self.out_proj
        w = in_proj.weight
        mha = nn.MultiheadAttention(self.embed_dim, self.num_heads, dropout=self.dropout,
                                    bias=in_proj.bias is not None, batch_first=self.batch_first,
                                    device=w.device, dtype=w.dtype)
        mha.in_proj_weight.copy_(w)
        if in_proj.bias is not None:
            mha.in_proj_bias.copy_(in_proj.bias)
        mha.out_proj.weight.copy_(out_proj.weight)
        if out_proj.bias is not None:
            mha.out_proj.bias.copy_(out_proj.bias)
        mha.requires_grad_(False)
        return mha
