"""TextSpan (Gandelsman, Efros, Steinhardt, ICLR 2024): describe one attention head's direct
contribution to the image embedding with a few text descriptions.

Given the head's contributions over a set of images (rows of `contributions`, in the joint
image-text embedding space) and the embeddings of a pool of descriptions, we greedily pick the
description along which the (centred) contributions vary most, remove that direction from both the
contributions and the remaining descriptions, and repeat. Descriptions are first projected onto the
span of the contributions' leading principal directions, so a description that points outside what
the head can write scores low no matter how common it is.

This is our own implementation of the published procedure; only the algorithm carries over.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medclipsvd.interpret.errors import InterpretError


@dataclass(frozen=True)
class SpanChoice:
    """One greedy step: the description chosen and how much of the head's variance it explains."""

    index: int            # row of the description pool
    text: str
    variance: float       # variance of the residual contributions along the chosen direction
    fraction: float       # variance / total variance of the centred contributions (before any removal)


@dataclass
class TextSpanResult:
    choices: list[SpanChoice] = field(default_factory=list)
    total_variance: float = 0.0
    span_rank: int = 0

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.choices]

    @property
    def explained(self) -> float:
        """Fraction of the head's variance removed by all chosen directions together."""
        return float(sum(c.fraction for c in self.choices))


def textspan(
    contributions: torch.Tensor,
    text_embeddings: torch.Tensor,
    texts: list[str] | None = None,
    n_select: int = 5,
    span_rank: int = 80,
    center_texts: bool = False,
) -> TextSpanResult:
    """Greedy TextSpan decomposition of one head.

    contributions: [N, D] direct contributions of the head to the image embedding (one per image).
    text_embeddings: [M, D] embeddings of the description pool (normalised or not; we normalise).
    texts: the M descriptions (defaults to their indices as strings).
    n_select: how many descriptions to pick.
    span_rank: number of principal directions of the contributions the descriptions are projected on
        (the paper uses 80); capped by what the data supports.
    center_texts: subtract the mean description embedding of the pool first (after normalising). Off by
        default, as in the published procedure; it removes the component all descriptions share, but then
        favours descriptions far from the pool's mean.
    """
    if contributions.ndim != 2 or text_embeddings.ndim != 2:
        raise InterpretError(
            f"textspan needs 2-D inputs, got contributions {tuple(contributions.shape)} and "
            f"text embeddings {tuple(text_embeddings.shape)}")
    n, d = contributions.shape
    m, d_text = text_embeddings.shape
    if d != d_text:
        raise InterpretError(
            f"contributions have dimension {d} but text embeddings {d_text}: both must live in the "
            "joint embedding space (use the same backbone for images and descriptions)")
    if n < 2:
        raise InterpretError(f"textspan needs at least 2 images to measure variance, got {n}")
    if m == 0:
        raise InterpretError("the description pool is empty")
    if texts is None:
        texts = [str(i) for i in range(m)]
    if len(texts) != m:
        raise InterpretError(f"{len(texts)} descriptions for {m} text embeddings")

    # float64 keeps the repeated deflation accurate for the small variances of late picks.
    data = contributions.detach().to(torch.float64)
    data = data - data.mean(dim=0, keepdim=True)
    total = float(data.pow(2).sum() / n)
    cand = text_embeddings.detach().to(torch.float64)
    cand = cand / cand.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if center_texts and m > 1:
        # All descriptions share a large common component ("this is a caption").
        cand = cand - cand.mean(dim=0, keepdim=True)

    # Restrict descriptions to the span the head actually writes into.
    _, s, vh = torch.linalg.svd(data, full_matrices=False)
    keep = int((s > s[0] * 1e-6).sum()) if s.numel() and s[0] > 0 else 0
    rank = max(0, min(span_rank, keep))
    basis = vh[:rank]                                   # [r, D], orthonormal rows
    cand = (cand @ basis.T) @ basis

    result = TextSpanResult(total_variance=total, span_rank=rank)
    if total == 0.0 or rank == 0:
        return result
    available = torch.ones(m, dtype=torch.bool)
    for _ in range(min(n_select, m, rank)):
        # Score = variance of the residual data along the (un-normalised) residual description:
        # a description whose useful part was already removed keeps only a short residual and
        # scores low, which is what stops near-duplicates from being picked twice.
        scores = (data @ cand.T).pow(2).sum(dim=0) / n
        scores[~available] = -1.0
        best = int(scores.argmax())
        direction = cand[best]
        norm = float(direction.norm())
        if norm < 1e-9:
            break
        direction = direction / norm
        along = data @ direction
        var = float(along.pow(2).sum() / n)
        result.choices.append(SpanChoice(best, texts[best], var, var / total))
        available[best] = False
        data = data - along[:, None] * direction[None, :]
        cand = cand - (cand @ direction)[:, None] * direction[None, :]
    return result
