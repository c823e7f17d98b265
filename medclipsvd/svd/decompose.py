"""Full SVD of weight matrices in float64, stored in the weight's dtype, cached on disk by content hash.

The cache is content-addressed (one safetensors file per matrix, named by the hash of the matrix), so a
second run, seed, dataset or preset reuses every decomposition it shares with an earlier one."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from medclipsvd.svd.fingerprint import tensor_hash

CACHE_VERSION = "v1"
# Relative reconstruction error above which a decomposition is rejected (float64 SVD gives ~1e-15;
# the float32 factors add ~1e-7).
MAX_RECONSTRUCTION_ERROR = 1e-5


@dataclass
class Factors:
    U: torch.Tensor  # [out, r]
    S: torch.Tensor  # [r], descending
    Vh: torch.Tensor  # [r, in]


def default_cache_dir() -> Path:
    root = os.environ.get("MEDCLIPSVD_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "medclipsvd"


def svd_factors(weight: torch.Tensor) -> Factors:
    """Reduced SVD (r = min(out, in)) computed in float64 and cast back to the weight's dtype."""
    w64 = weight.detach().to(device="cpu", dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(w64, full_matrices=False)
    err = ((U * S) @ Vh - w64).abs().max() / w64.abs().max().clamp_min(1e-30)
    if err > MAX_RECONSTRUCTION_ERROR:
        raise ArithmeticError(f"SVD reconstruction error {err:.2e} for a {tuple(weight.shape)} matrix")
    dtype = weight.dtype
    return Factors(U.to(dtype).contiguous(), S.to(dtype).contiguous(), Vh.to(dtype).contiguous())


class SVDCache:
    """Content-addressed on-disk store of `Factors`. `cache_dir=False` disables it."""

    def __init__(self, cache_dir: str | Path | None | bool = None):
        if cache_dir is False:
            self.root = None
        else:
            base = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
            self.root = base / "svd" / CACHE_VERSION
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, weight: torch.Tensor) -> Factors:
        """Factors of `weight`, on its device and in its dtype (computed on the CPU in float64 if not cached)."""
        f = self._get_cpu(weight)
        return Factors(*(t.to(device=weight.device, dtype=weight.dtype) for t in (f.U, f.S, f.Vh)))

    def _get_cpu(self, weight: torch.Tensor) -> Factors:
        from safetensors.torch import load_file, save_file

        key = tensor_hash(weight) if self.root is not None else None
        if key is not None:
            path = self._path(key)
            if path.is_file():
                try:
                    t = load_file(str(path))
                    self.hits += 1
                    return Factors(t["U"], t["S"], t["Vh"])
                except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, not fatal
                    path.unlink(missing_ok=True)
        factors = svd_factors(weight)
        self.misses += 1
        if key is not None:
            path = self._path(key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                save_file({"U": factors.U, "S": factors.S, "Vh": factors.Vh}, str(tmp))
                os.replace(tmp, path)  # atomic: concurrent runs never read half a file
            except OSError:
                pass  # a read-only or full cache only costs time
        return factors
