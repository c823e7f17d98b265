"""Cost of σ-only SVD adaptation against full fine-tuning and the reference's form, per training step.

Variants, timed interleaved (a b c a b c ...), median over --steps steps after --warmup steps:
  (a) full fine-tuning of the same matrices (their weights trainable, AdamW), cut prompts;
  (b) the reference's form, written by us: every nn.Linear decomposed and run as two matmuls (frozen
      ones included), q/k/v separate, full-length prompts (77 CLIP / 256 BiomedCLIP tokens);
  (c) ours: only targeted matrices decomposed, cheaper of factorised/rebuilt per call, cut prompts;
and evaluation forwards (no grad) of
  (d) the base model and (e) our merged model.
A training step = forward of images and all class prompts, cross-entropy on cosine logits, backward, AdamW.

Memory: bytes of tensors saved for backward (deduplicated by storage) per training step, and on CUDA the
peak allocated memory per variant. Also: SVD set-up time (empty cache, then cached) and adapter size.

Usage:
  python benchmarks/bench_svd.py --backbone clip-vit-b16 --batch-sizes 8,32 --steps 10
  python benchmarks/bench_svd.py --backbone biomedclip --batch-sizes 8,32 --steps 10 --json out.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medclipsvd.backbones import load_backbone
from medclipsvd.svd import PRESETS, SVDLinear, adapt, merge, save_adapter, select_targets, set_mode, svd_factors
from medclipsvd.svd.adapt import _get, _set

CLASSES = ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain", "benign tumor",
           "malignant tumor", "normal scan", "covid lungs", "lung opacity lungs", "viral pneumonia lungs"]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class SavedBytes:
    """Counts bytes of distinct storages saved for backward during a step."""

    def __init__(self):
        self.seen: dict[int, int] = {}

    def pack(self, t):
        try:
            storage = t.untyped_storage()
            self.seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def full_finetune_model(name, device):
    """(a): the base model with the weights of the paper-preset matrices trainable."""
    bb = load_backbone(name, random_init=True)
    bb.model.requires_grad_(False)
    for cand in select_targets(bb, PRESETS["paper"]):
        parent_path, leaf = cand.slot.rsplit(".", 1)
        parent = _get(bb.model, parent_path)
        if isinstance(parent, nn.MultiheadAttention):  # q/k/v live in in_proj_weight
            (parent.in_proj_weight if leaf == "in_proj" else parent.out_proj.weight).requires_grad_(True)
        else:
            _get(bb.model, cand.slot).weight.requires_grad_(True)
    return bb.to(device)


def reference_form_model(name, device):
    """(b): every Linear decomposed (two matmuls), targets' σ trainable, everything else frozen."""
    bb = adapt(load_backbone(name, random_init=True), "paper").to(device)
    set_mode(bb, "factorised")
    for path, module in list(bb.model.named_modules()):
        if type(module) is nn.Linear or isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            f = svd_factors(module.weight)
            wrapped = SVDLinear(module.weight, module.bias, {"": f}, mode="factorised").to(device)
            wrapped.sigma_of("").requires_grad_(False)
            _set(bb.model, path, wrapped)
    return bb


def train_step(bb, images, tokens, labels, opt, counter=None):
    ctx = torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t) if counter else _null()
    with ctx:
        logits = bb(images, tokens)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def bench_backbone(name, batch_sizes, steps, warmup, device, on_progress=lambda out: None):
    out = {"backbone": name}
    # SVD set-up: empty cache, then cached
    with tempfile.TemporaryDirectory() as tmp:
        bb = load_backbone(name, random_init=True)
        t = time.perf_counter()
        adapt(bb, "paper", cache_dir=tmp)
        out["svd_setup_first_s"] = time.perf_counter() - t
        bb = load_backbone(name, random_init=True)
        t = time.perf_counter()
        adapt(bb, "paper", cache_dir=tmp)
        out["svd_setup_cached_s"] = time.perf_counter() - t
        adapter = save_adapter(bb, Path(tmp) / "adapter")
        out["adapter_bytes"] = sum(p.stat().st_size for p in adapter.iterdir())
    del bb

    a = full_finetune_model(name, device)
    b = reference_form_model(name, device)
    c = adapt(load_backbone(name, random_init=True), "paper").to(device)
    d = load_backbone(name, random_init=True).to(device)
    e = merge(copy.deepcopy(c))
    for m in (a, b, c):
        m.train()
    for m in (d, e):
        m.eval()
    prompts = [f"a photo of a {c_}." for c_ in CLASSES]
    cut = c.tokenize(prompts)
    full = c.tokenizer(prompts, cut=False).to(device)
    out["prompt_tokens"] = {"cut": cut.shape[1], "full": full.shape[1]}
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-6)
            for k, m in (("a", a), ("b", b), ("c", c))}
    out["trainable"] = {k: sum(p.numel() for g in o.param_groups for p in g["params"]) for k, o in opts.items()}
    variants = {"a": (a, cut), "b": (b, full), "c": (c, cut)}
    gen = torch.Generator().manual_seed(0)
    out["batches"] = {}
    for bs in batch_sizes:
        images = torch.randn(bs, 3, 224, 224, generator=gen).to(device)
        labels = torch.randint(0, len(CLASSES), (bs,), generator=gen).to(device)
        times = {k: [] for k in "abcde"}
        mem = {}
        for k, (m, tok) in variants.items():  # memory probe + warm-up
            counter = SavedBytes()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            train_step(m, images, tok, labels, opts[k], counter)
            mem[k] = {"saved_for_backward_bytes": counter.total}
            if device.type == "cuda":
                mem[k]["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
            for _ in range(warmup - 1):
                train_step(m, images, tok, labels, opts[k])
        with torch.no_grad():
            for m in (d, e):
                for _ in range(warmup):
                    m(images, cut)
        for i in range(steps):
            for k, (m, tok) in variants.items():
                times[k].append(timed(lambda: train_step(m, images, tok, labels, opts[k]), device))
            with torch.no_grad():
                times["d"].append(timed(lambda: d(images, cut), device))
                times["e"].append(timed(lambda: e(images, cut), device))
            print(f"  [{name} batch {bs}] step {i + 1}/{steps}: " +
                  " ".join(f"{k}={v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr, flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        out["batches"][bs] = {
            "median_s": med,
            "ratios": {"c/a": med["c"] / med["a"], "b/c": med["b"] / med["c"], "e/d": med["e"] / med["d"]},
            "memory": mem,
        }
        on_progress(out)  # full-size CPU runs are long: keep what is measured
    return out


def report(results, command, device):
    lines = [f"Command: `{command}`", "",
             f"Device: {device}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
             f"{platform.processor() or platform.machine()}", ""]
    for r in results:
        lines += [f"### {r['backbone']}", "",
                  f"SVD set-up: {r['svd_setup_first_s']:.1f} s with an empty cache, "
                  f"{r['svd_setup_cached_s']:.2f} s cached; adapter {r['adapter_bytes'] / 1024:.0f} KiB; "
                  f"prompts {r['prompt_tokens']['cut']} tokens cut vs {r['prompt_tokens']['full']} full; "
                  f"trainable (a) {r['trainable']['a']:,} (b) {r['trainable']['b']:,} (c) {r['trainable']['c']:,}", "",
                  "| batch | (a) full FT s | (b) reference form s | (c) ours s | (d) base eval s | (e) merged eval s "
                  "| c/a | b/c | e/d | saved-for-backward MiB a / b / c |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for bs, v in r["batches"].items():
            m, q, mem = v["median_s"], v["ratios"], v["memory"]
            mib = " / ".join(f"{mem[k]['saved_for_backward_bytes'] / 2**20:.0f}" for k in "abc")
            lines.append(f"| {bs} | {m['a']:.3f} | {m['b']:.3f} | {m['c']:.3f} | {m['d']:.3f} | {m['e']:.3f} "
                         f"| {q['c/a']:.3f} | {q['b/c']:.3f} | {q['e/d']:.3f} | {mib} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", action="append", help="clip-vit-b16, biomedclip, tiny-clip, tiny-biomedclip "
                   "(repeatable; default clip-vit-b16 and biomedclip)")
    p.add_argument("--batch-sizes", default="8,32")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the raw figures as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    names = args.backbone or ["clip-vit-b16", "biomedclip"]
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    command = "python benchmarks/bench_svd.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results = []

    def save(partial):
        if args.json:
            args.json.write_text(json.dumps({"command": command, "results": results + [partial]},
                                            indent=2, default=str))

    for n in names:
        results.append(bench_backbone(n, sizes, args.steps, max(1, args.warmup), device, on_progress=save))
    print(report(results, command, device))
    if args.json:
        args.json.write_text(json.dumps({"command": command, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
