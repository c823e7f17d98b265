"""What σ-only adaptation changed, measured on the weights alone (no images needed).

Two views:
* per adapted matrix: relative change of its singular values ‖σ−σ₀‖/‖σ₀‖ and the singular
  directions that were amplified or suppressed most;
* per attention head: the singular spectrum of the head's value-output map W_O^h·W_V^h before and
  after adaptation. A change of σ in W_V or W_O moves whole singular directions that usually mix all
  heads, so slicing a matrix's spectrum into blocks of head_dim values (as the reference scripts do)
  does not describe heads; the product W_O^h·W_V^h is what a head actually writes to the residual
  stream. We also give the query-key map W_Q^hᵀ·W_K^h as a second column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from medclipsvd.interpret.errors import InterpretError

MATRIX_ORDER = ("q", "k", "v", "o", "fc1", "fc2")


@dataclass(frozen=True)
class Direction:
    """One singular direction of one matrix: its rank in the pretrained spectrum and both values."""

    target: str
    index: int
    sigma0: float
    sigma: float
    scale: float          # ‖σ₀‖ of the matrix

    @property
    def rel_delta(self) -> float:
        """(σ−σ₀)/‖σ₀‖: this direction's share of the matrix's relative change (signed).

        Directions are ranked by this rather than by σ/σ₀, which is dominated by the near-zero tail of
        the spectrum, where a tiny absolute step is a huge ratio and changes nothing in the function."""
        return (self.sigma - self.sigma0) / self.scale if self.scale > 0 else self.sigma - self.sigma0

    @property
    def ratio(self) -> float:
        return self.sigma / self.sigma0 if self.sigma0 != 0 else math.inf


@dataclass
class MatrixChange:
    target: str
    tower: str
    layer: int
    matrix: str
    rel_change: float                     # ‖σ−σ₀‖ / ‖σ₀‖
    amplified: list[Direction] = field(default_factory=list)    # largest σ−σ₀ first
    suppressed: list[Direction] = field(default_factory=list)   # most negative σ−σ₀ first


def _field(info: Any, name: str) -> Any:
    return info[name] if isinstance(info, Mapping) else getattr(info, name)


def matrix_changes(
    infos: Mapping[str, Any],
    sigmas: Mapping[str, torch.Tensor],
    sigma0s: Mapping[str, torch.Tensor] | None = None,
    top: int = 5,
) -> list[MatrixChange]:
    """Relative σ change of every adapted matrix, largest first.

    infos: target name -> TargetInfo (tower, layer, matrix), as `adapted_modules(bb)` gives.
    sigmas: target name -> current σ, as `sigma_parameters(bb)` gives.
    sigma0s: target name -> σ₀, as `initial_sigmas(bb)` gives (default: each info's `sigma0`).
    """
    missing = sorted(set(infos) - set(sigmas))
    if missing:
        raise InterpretError(f"no σ for adapted targets {missing[:3]}...: pass sigma_parameters(bb)")
    out = []
    for name, info in infos.items():
        s0 = (sigma0s[name] if sigma0s is not None else _field(info, "sigma0")).detach().double().flatten()
        s = sigmas[name].detach().double().flatten().to(s0.device)
        if s.shape != s0.shape:
            raise InterpretError(f"{name}: σ has {s.numel()} values but σ₀ has {s0.numel()}")
        denom = float(s0.norm())
        rel = float((s - s0).norm()) / denom if denom > 0 else float((s - s0).norm())
        delta = s - s0
        order = torch.argsort(delta, descending=True)
        k = min(top, s.numel())
        mk = lambda i: Direction(name, int(i), float(s0[i]), float(s[i]), denom)
        amp = [mk(i) for i in order[:k] if delta[i] > 0]
        sup = [mk(i) for i in order.flip(0)[:k] if delta[i] < 0]
        out.append(MatrixChange(name, _field(info, "tower"), int(_field(info, "layer")),
                                _field(info, "matrix"), rel, amp, sup))
    out.sort(key=lambda c: c.rel_change, reverse=True)
    return out


def extreme_directions(changes: list[MatrixChange], top: int = 10) -> tuple[list[Direction], list[Direction]]:
    """Most amplified and most suppressed singular directions over the whole model."""
    amp = sorted((d for c in changes for d in c.amplified), key=lambda d: d.rel_delta, reverse=True)
    sup = sorted((d for c in changes for d in c.suppressed), key=lambda d: d.rel_delta)
    return amp[:top], sup[:top]


def heatmap_grid(changes: list[MatrixChange], tower: str, num_layers: int | None = None
                 ) -> tuple[list[int], list[str], torch.Tensor]:
    """Layers × matrix types grid of relative σ change for one tower; NaN where nothing was adapted."""
    rows = [c for c in changes if c.tower == tower]
    if num_layers is None:
        num_layers = 1 + max((c.layer for c in rows), default=-1)
    kinds = [m for m in MATRIX_ORDER if any(c.matrix == m for c in rows)]
    kinds += sorted({c.matrix for c in rows} - set(kinds))
    grid = torch.full((num_layers, len(kinds)), float("nan"))
    for c in rows:
        grid[c.layer, kinds.index(c.matrix)] = c.rel_change
    return list(range(num_layers)), kinds, grid


# --------------------------------------------------------------------------------------------
# Per-head spectra


@dataclass(frozen=True)
class AttentionWeights:
    """Plain (effective) weights of one self-attention layer, PyTorch Linear convention (out × in).

    q, k, v: [H·hd, d]; o: [d, H·hd]; biases may be None.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    num_heads: int
    bq: torch.Tensor | None = None
    bk: torch.Tensor | None = None
    bv: torch.Tensor | None = None
    bo: torch.Tensor | None = None

    @property
    def head_dim(self) -> int:
        return self.v.shape[0] // self.num_heads


def _product_svals(left: torch.Tensor, right_t: torch.Tensor) -> torch.Tensor:
    """Singular values of left @ right_tᵀ for batches of [.., d, r] factors (r ≪ d), computed from r×r
    factors: left = Q₁R₁, right_t = Q₂R₂ ⇒ left·right_tᵀ = Q₁(R₁R₂ᵀ)Q₂ᵀ has the singular values of
    R₁R₂ᵀ. A d×d SVD per head would cost 100× more for ViT-B."""
    r1 = torch.linalg.qr(left.detach().double(), mode="r")[1]
    r2 = torch.linalg.qr(right_t.detach().double(), mode="r")[1]
    return torch.linalg.svdvals(r1 @ r2.transpose(-1, -2))


def head_spectra(w: AttentionWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head singular values of W_O^h·W_V^h and of W_Q^hᵀ·W_K^h; each [H, hd], descending."""
    h, hd = w.num_heads, w.head_dim
    if w.v.shape[0] != h * hd or w.o.shape[1] != h * hd:
        raise InterpretError(
            f"attention weights do not split into {h} heads: W_V {tuple(w.v.shape)}, W_O {tuple(w.o.shape)}")
    d_out, d_in = w.o.shape[0], w.v.shape[1]
    heads_of_rows = lambda m: m.reshape(h, hd, -1).transpose(1, 2)          # [H·hd, d] -> [H, d, hd]
    o = w.o.reshape(d_out, h, hd).permute(1, 0, 2)                           # W_O^h: [H, d, hd]
    ov = _product_svals(o, heads_of_rows(w.v))                              # W_O^h · W_V^h
    qk = _product_svals(heads_of_rows(w.q), heads_of_rows(w.k))             # W_Q^hᵀ · W_K^h
    return ov, qk


@dataclass
class HeadChange:
    tower: str
    layer: int
    head: int
    ov_change: float          # ‖s_after − s_before‖ / ‖s_before‖ of W_O^h·W_V^h
    qk_change: float          # same for W_Q^hᵀ·W_K^h
    ov_before: torch.Tensor
    ov_after: torch.Tensor

    @property
    def key(self) -> str:
        return f"{self.tower} L{self.layer} H{self.head}"


def _rel(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    return (after - before).norm(dim=-1) / before.norm(dim=-1).clamp_min(1e-12)


def head_changes(
    before: Mapping[tuple[str, int], AttentionWeights],
    after: Mapping[tuple[str, int], AttentionWeights],
) -> list[HeadChange]:
    """Rank every head of every given (tower, layer) by the change of its value-output spectrum."""
    if set(before) != set(after):
        raise InterpretError("before/after attention weights cover different layers")
    out = []
    for key in before:
        ov0, qk0 = head_spectra(before[key])
        ov1, qk1 = head_spectra(after[key])
        d_ov, d_qk = _rel(ov1, ov0), _rel(qk1, qk0)
        for h in range(ov0.shape[0]):
            out.append(HeadChange(key[0], key[1], h, float(d_ov[h]), float(d_qk[h]),
                                  ov0[h].float(), ov1[h].float()))
    out.sort(key=lambda c: (c.ov_change, c.qk_change), reverse=True)
    return out
