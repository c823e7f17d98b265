"""Would a smaller SVD cache stay exact? Rounds the cached factors (U, σ, Vh) through float16 and bfloat16 on
load and reports `medclipsvd summary`'s max |Δlogit| at initialisation for clip-vit-b16 (random weights).
The exactness bound for adopting a storage dtype is 1e-4. Uses (and fills) the default cache.

Usage: python benchmarks/bench_svd_cache_dtype.py"""
import json

import torch

import medclipsvd.svd.decompose as decompose
from medclipsvd.summary import summarize


def main() -> None:
    original = decompose.SVDCache.get
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        def get(self, weight, dtype=dtype):
            f = original(self, weight)
            return decompose.Factors(*(t.to(dtype).to(weight.dtype) for t in (f.U, f.S, f.Vh)))

        decompose.SVDCache.get = get
        r = summarize("clip-vit-b16", random_init=True)
        bytes_per_value = torch.finfo(dtype).bits // 8
        print(json.dumps({"storage": str(dtype).removeprefix("torch."), "bytes_per_value": bytes_per_value,
                          "max_abs_logit_diff": r["max_abs_logit_diff"], "exact": r["max_abs_logit_diff"] <= 1e-4}))
    decompose.SVDCache.get = original


if __name__ == "__main__":
    main()
