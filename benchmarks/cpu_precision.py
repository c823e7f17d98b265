"""CPU fp32 against bf16 on full-size BiomedCLIP (random weights, no download), in one run.

    python benchmarks/cpu_precision.py                        # σ-only training steps and eval forwards
    python benchmarks/cpu_precision.py --tolerance            # + bf16 vs fp32 logits and σ after N steps
    python benchmarks/cpu_precision.py --e2e --data-root ../shared/data/biomedical   # + 16-shot BUSI end to end

Steps and evaluation forwards alternate between the precisions (fp32, bf16, fp32, bf16, ...) so that a load
change on a shared machine hits both alike; the first of each is a warm-up and is not counted. A training
step is what `medclipsvd train` does per iteration: the class prompts encoded once for all classes (the text
tower is adapted, so with gradients), the image batch, cross-entropy, backward to σ, AdamW. An evaluation
forward is the merged model's image tower on one batch, as `evaluate` runs it. bf16 = CPU autocast, the path
`--precision auto` takes on CPUs with native bf16; on a CPU without it (the script says which) bf16 runs
emulated and its times say nothing about native hardware, but --tolerance figures hold (the rounding is the
same). --e2e times `medclipsvd train` (200 iterations + evaluation of the 236 test images) once per precision
asked with --e2e-precisions (default: auto); it refuses bf16 on a CPU without it, as the CLI does.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def _step(model, x, y, tokens, opt, prec, dev):
    from medclipsvd.device import autocast

    t0 = time.perf_counter()
    with autocast(dev, prec):
        logits = model(x, tokens=tokens)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


@torch.no_grad()
def _eval(bb, x, prec, dev):
    from medclipsvd.device import autocast

    t0 = time.perf_counter()
    with autocast(dev, prec):
        bb.encode_image(x)
    return time.perf_counter() - t0


def interleaved(fn, precisions, rounds: int) -> dict:
    """{precision: [seconds...]} over `rounds` alternations, the first round a warm-up."""
    times = {p: [] for p in precisions}
    for r in range(rounds + 1):
        for p in precisions:
            s = fn(p)
            if r:
                times[p].append(s)
            print(f"  {'warm-up ' if not r else ''}{p}: {s:.2f} s", file=sys.stderr, flush=True)
    return times


def tolerance(bb, params, x, y, tokens, steps: int, dev) -> dict:
    """bf16 vs fp32 from the same start: |Δcos| of every image/class pair (logits / logit_scale) and σ after
    `steps` AdamW steps at the paper's lr (2e-3)."""
    from medclipsvd.device import autocast
    from medclipsvd.engine.trainer import ContrastiveClassifier

    model = ContrastiveClassifier(bb)
    sigma0 = {k: p.detach().clone() for k, p in params.items()}
    cos, sig = {}, {}
    for prec in ("fp32", "bf16"):
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(sigma0[k])
        bb.eval()
        with torch.no_grad(), autocast(dev, prec):
            img = F.normalize(bb.encode_image(x).float(), dim=-1)
            txt = F.normalize(bb.encode_text(tokens).float(), dim=-1)
        cos[prec] = img @ txt.T
        bb.train()
        torch.manual_seed(0)
        opt = torch.optim.AdamW(list(params.values()), lr=2e-3, weight_decay=0.0)
        for _ in range(steps):
            _step(model, x, y, tokens, opt, prec, dev)
        sig[prec] = torch.cat([p.detach().flatten().clone() for p in params.values()])
        assert all(p.dtype == torch.float32 for p in params.values())
    s0 = torch.cat([v.flatten() for v in sigma0.values()])
    d32, d16 = sig["fp32"] - s0, sig["bf16"] - s0
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(sigma0[k])
    return {"max_abs_cos_diff": float((cos["bf16"] - cos["fp32"]).abs().max()),
            "steps": steps, "sigma_rel_diff": float((sig["bf16"] - sig["fp32"]).norm() / sig["fp32"].norm()),
            "sigma_update_cosine": float(F.cosine_similarity(d32, d16, dim=0)),
            "sigma_update_rel_diff": float((d16 - d32).norm() / d32.norm())}


def e2e(data_root: str, precision: str, out: str) -> dict:
    cmd = [sys.executable, "-m", "medclipsvd", "train", "--pipeline", "breast_ultrasound", "--data-root", data_root,
           "--backbone", "biomedclip", "--random-init", "--shots", "16", "--seed", "1", "--device", "cpu",
           "--precision", precision, "--no-mlflow", "--checkpoint-every", "0", "--force", "--output", out]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"command": " ".join(shlex.quote(c) for c in cmd[1:]), "wall_seconds": round(wall, 1), "rc": proc.returncode}
    if proc.returncode:
        row["error"] = proc.stderr.strip().splitlines()[-1:]
        return row
    res = json.loads(open(os.path.join(out, "results.json")).read())
    row.update({"precision_ran": res["precision"], "train_seconds": res["train"]["seconds"],
                "steps": res["train"]["steps"], "test_accuracy": res["summary"].get("test")})
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="biomedclip")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=3, help="class prompts encoded per step (BUSI: 3)")
    ap.add_argument("--rounds", type=int, default=2, help="timed steps per precision (after one warm-up)")
    ap.add_argument("--eval-rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--tolerance", action="store_true", help="also measure bf16 vs fp32 logits and σ")
    ap.add_argument("--tolerance-steps", type=int, default=3)
    ap.add_argument("--tolerance-batch", type=int, default=8)
    ap.add_argument("--e2e", action="store_true", help="also time `medclipsvd train` on 16-shot BUSI")
    ap.add_argument("--e2e-precisions", default="auto")
    ap.add_argument("--data-root", default="../shared/data/biomedical")
    ap.add_argument("--work", default="/tmp/cpu_precision")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from medclipsvd.backbones import load_backbone
    from medclipsvd.device import auto_precision, cpu_flags, cpu_native_bf16
    from medclipsvd.engine.trainer import ContrastiveClassifier
    from medclipsvd.svd import adapt, merge, sigma_parameters

    dev = torch.device("cpu")
    native = cpu_native_bf16()
    result = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"torch {torch.__version__}, {torch.get_num_threads()} threads",
              "cpu_native_bf16": native, "bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f),
              "auto_runs": auto_precision(dev), "load_average_start": os.getloadavg()}
    print(f"CPU native bf16: {native} ({result['bf16_flags'] or 'no bf16/AMX flags'}); auto runs "
          f"{result['auto_runs']}" + ("" if native else "; bf16 below is EMULATED"), file=sys.stderr)
    t0 = time.perf_counter()
    bb = load_backbone(args.backbone, random_init=True)
    adapt(bb, "paper")
    result["setup_seconds"] = round(time.perf_counter() - t0, 1)
    params = sigma_parameters(bb)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, bb.image_size, bb.image_size, generator=g)
    y = torch.arange(args.batch_size) % args.classes
    tokens = bb.tokenize([f"a photo of a class number {i}." for i in range(args.classes)])
    precisions = ("fp32", "bf16")

    if args.tolerance:
        print("tolerance (bf16 vs fp32)", file=sys.stderr)
        n = args.tolerance_batch
        result["tolerance"] = tolerance(bb, params, x[:n], y[:n], tokens, args.tolerance_steps, dev)
        print(f"  {result['tolerance']}", file=sys.stderr)

    print(f"training steps, batch {args.batch_size}", file=sys.stderr)
    model = ContrastiveClassifier(bb)
    bb.train()
    opt = torch.optim.AdamW(list(params.values()), lr=1e-5)
    steps = interleaved(lambda p: _step(model, x, y, tokens, opt, p, dev), precisions, args.rounds)
    merge(bb)
    bb.eval()
    print(f"evaluation forwards (merged), batch {args.batch_size}", file=sys.stderr)
    evals = interleaved(lambda p: _eval(bb, x, p, dev), precisions, args.eval_rounds)
    for name, times in (("train_step", steps), ("eval_forward", evals)):
        med = {p: statistics.median(v) for p, v in times.items()}
        result[name] = {"seconds": {p: [round(s, 2) for s in v] for p, v in times.items()},
                        "median_seconds": {p: round(s, 2) for p, s in med.items()},
                        "fp32_over_bf16": round(med["fp32"] / med["bf16"], 2)}
    result["load_average_end"] = os.getloadavg()
    if args.e2e:
        del bb, model, opt, params
        result["e2e"] = [e2e(args.data_root, p, os.path.join(args.work, f"e2e-{p}"))
                         for p in args.e2e_precisions.split(",")]
        result["load_average_after_e2e"] = os.getloadavg()
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
