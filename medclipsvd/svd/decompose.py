"""Full SVD of weight matrices in float64, stored in the weight's dtype, cached on disk by content hash.

The cache is content-addressed (one safetensors file per matrix, named by the hash of the matrix), so a
second run, seed, dataset or preset reuses every decomposition it shares with an earlier one.

A cache entry is not trusted blindly: its metadata records the hash of the matrix it decomposes and a
checksum of its own tensors, and on every load a cheap probe (a few random vectors v, checking
‖W·v − U·(σ·(Vh·v))‖ / ‖W·v‖) confirms that it reconstructs the weight. An entry that fails any check is
recomputed and rewritten, and the user is told once per process."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from medclipsvd.backbones.fingerprint import tensor_hash

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


CACHE_FORMAT = "medclipsvd.svd-cache"
# Probe tolerance: float32 factors reconstruct W·v to ~1e-6 relative; an altered σ or vector shows far above.
PROBE_TOLERANCE = 1e-4
PROBE_VECTORS = 4
_warned: set[str] = set()


def factors_checksum(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> str:
    from medclipsvd.backbones.fingerprint import tensor_hash

    return "".join(tensor_hash(t) for t in (U, S, Vh))


def probe_error(weight: torch.Tensor, f: Factors, n: int = PROBE_VECTORS) -> float:
    """Relative error of U·diag(S)·Vh against `weight` on `n` fixed random vectors. Three thin mat-muls in
    float32 (no copy of float32 matrices): float32 factors of a float64 SVD reproduce W·v to ~1e-6."""
    if f.U.shape != (weight.shape[0], f.S.shape[0]) or f.Vh.shape != (f.S.shape[0], weight.shape[1]):
        return float("inf")
    w = weight.detach().to("cpu", torch.float32)
    v = torch.randn(w.shape[1], n, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wv = w @ v
        rec = f.U.float() @ (f.S.float()[:, None] * (f.Vh.float() @ v))
    return float((wv - rec).norm() / wv.norm().clamp_min(1e-30))


def probe_tolerance(dtype: torch.dtype) -> float:
    """PROBE_TOLERANCE for float32/float64 factors; factors kept in a 16-bit weight dtype are only as exact
    as that dtype (their round-off, not an alteration, must pass)."""
    return max(PROBE_TOLERANCE, 50 * torch.finfo(dtype).eps)


def _say_once(root: Path, message: str) -> None:
    import sys

    if str(root) not in _warned:
        _warned.add(str(root))
        print(f"medclipsvd: {message}", file=sys.stderr)


class SVDCache:
    """Content-addressed on-disk store of verified `Factors`. `cache_dir=False` disables it."""

    def __init__(self, cache_dir: str | Path | None | bool = None):
        if cache_dir is False:
            self.root = None
        else:
            base = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
            self.root = base / "svd" / CACHE_VERSION
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # entries that failed verification and were recomputed

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, weight: torch.Tensor) -> Factors:
        """Factors of `weight`, on its device and in its dtype (computed on the CPU in float64 if not cached)."""
        f = self._get_cpu(weight)
        return Factors(*(t.to(device=weight.device, dtype=weight.dtype) for t in (f.U, f.S, f.Vh)))

    def _load(self, path: Path, key: str, weight: torch.Tensor) -> Factors | None:
        """The verified entry, or None (with the reason) when it must be recomputed."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                f = Factors(fh.get_tensor("U"), fh.get_tensor("S"), fh.get_tensor("Vh"))
        except Exception:  # noqa: BLE001 - unreadable entries (torn, truncated, not safetensors) are recomputed
            return None
        if meta.get("format") != CACHE_FORMAT or meta.get("weight") != key:
            return None  # an older entry without a record, or a file copied under another matrix's name
        if meta.get("checksum") != factors_checksum(f.U, f.S, f.Vh):
            return None
        if not probe_error(weight, f) <= probe_tolerance(f.U.dtype):  # catches NaN too
            return None
        return f

    def _get_cpu(self, weight: torch.Tensor) -> Factors:
        from medclipsvd.io import safetensors_bytes, write_bytes

        key = tensor_hash(weight) if self.root is not None else None
        if key is not None:
            path = self._path(key)
            if path.is_file():
                f = self._load(path, key, weight)
                if f is not None:
                    self.hits += 1
                    return f
                self.rejected += 1
                _say_once(self.root, f"an SVD cache entry in {self.root} did not verify against its weight matrix "
                                     "(damaged, altered or from an older version); recomputing such entries")
        factors = svd_factors(weight)
        self.misses += 1
        if key is not None:
            meta = {"format": CACHE_FORMAT, "weight": key,
                    "checksum": factors_checksum(factors.U, factors.S, factors.Vh)}
            try:
                write_bytes(self._path(key), safetensors_bytes(
                    {"U": factors.U, "S": factors.S, "Vh": factors.Vh}, metadata=meta))
            except OSError:
                pass  # a read-only or full cache only costs time (write_bytes leaves no temp file)
        return factors
