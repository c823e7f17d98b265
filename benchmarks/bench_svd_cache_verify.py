"""Cost of verifying SVD cache entries: plain `load_file` vs `SVDCache._load` (checksum + reconstruction
probe) of every entry in a filled cache, interleaved, in one process.

Usage: MEDCLIPSVD_CACHE=DIR python benchmarks/bench_svd_cache_verify.py   (after `medclipsvd summary
--backbone clip-vit-b16 --random-init` filled DIR). The probe compares against W = U·diag(σ)·Vh rebuilt
from each entry (the random-init weights are not kept), which costs the same as the real weight."""
import time

from safetensors.torch import load_file

from medclipsvd.svd.decompose import SVDCache


def main() -> None:
    cache = SVDCache()
    files = sorted(cache.root.rglob("*.safetensors"))
    weights = {}
    for f in files:
        t = load_file(str(f))
        weights[f] = ((t["U"] * t["S"]) @ t["Vh"]).contiguous()
    plain = verified = 0.0
    for _ in range(2):
        for f in files:
            a = time.perf_counter()
            load_file(str(f))
            b = time.perf_counter()
            assert cache._load(f, f.stem, weights[f]) is not None, f
            c = time.perf_counter()
            plain += b - a
            verified += c - b
    print(f"entries {len(files)} x2: plain load {plain:.2f} s, verified load {verified:.2f} s, "
          f"ratio {verified / plain:.1f}")


if __name__ == "__main__":
    main()
