"""Content hashes of weights: the SVD cache key of one matrix, and the identity of a whole base model."""
from __future__ import annotations

from typing import Mapping

import torch
import xxhash


def tensor_hash(t: torch.Tensor) -> str:
    """xxh3-128 of dtype, shape and bytes. Fast (GB/s), for identity, not for security."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    h = xxhash.xxh3_128()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    # view as bytes so bfloat16 (no numpy equivalent) hashes the same way as other dtypes
    h.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    h = xxhash.xxh3_128()
    for name in sorted(state):
        h.update(name.encode())
        h.update(tensor_hash(state[name]).encode())
    return h.hexdigest()
