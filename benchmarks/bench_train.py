"""Training throughput of σ-only adaptation on a full-size backbone (random weights, no download), and the
projected wall time of the biomedical few-shot suite (10 datasets x K in 1,2,4,8,16 x 3 seeds).

    python benchmarks/bench_train.py                                  # clip-vit-b16, paper preset, batch 32
    python benchmarks/bench_train.py --backbone biomedclip --steps 20 --device cuda
    python benchmarks/bench_train.py --steps 2 --warmup 1 --device cpu  # CPU: a few steps only

What one step does is what the trainer does: forward of a batch of 224 px images and of all class prompts
(re-encoded every step, the text tower is adapted), cross-entropy, backward to σ, AdamW step, under
`--precision` as `train` takes it (auto: bf16 on CUDA and on CPUs with native bf16, else fp32; see
benchmarks/cpu_precision.py for fp32 against bf16 on a CPU). Step time is measured at batch 32 and at a
small batch, and modelled as a + b * batch to project the suite, whose few-shot batches are often smaller
than 32."""
from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time

import torch
import torch.nn.functional as F

BIOMEDICAL = ("BTMRI", "BUSI", "CHMNIST", "COVID_19", "CTKidney", "KneeXray", "Kvasir", "LungColon", "OCTMNIST",
              "RETINA")


def suite_table() -> dict:
    """{dataset: (classes, hparams, test images)} of the biomedical few-shot suite, read from the dataset
    registry and configs/few_shot (so the projection follows the configs' iteration counts)."""
    from medclipsvd.data import dataset_info
    from medclipsvd.engine.config import load_hparams

    out = {}
    for name in BIOMEDICAL:
        info = dataset_info(name)
        out[name] = (info.num_classes, load_hparams("few_shot", name), info.counts["test"])
    return out


SHOTS = (1, 2, 4, 8, 16)
SEEDS = 3


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(bb, params, n_classes, batch, steps, warmup, dev, precision="auto") -> float:
    """Mean seconds per training step at `batch` images."""
    from medclipsvd.engine.trainer import autocast_for

    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)
    tokens = bb.tokenize([f"a photo of a class number {i}." for i in range(n_classes)]).to(dev)
    x = torch.randn(batch, 3, bb.image_size, bb.image_size, device=dev)
    y = torch.randint(0, n_classes, (batch,), device=dev)
    bb.train()
    times = []
    for i in range(warmup + steps):
        _sync(dev)
        t0 = time.perf_counter()
        with autocast_for(dev, precision):
            txt = bb.encode_text(tokens)
            img = bb.encode_image(x)
            logits = bb.logit_scale.to(dev) * img @ txt.T
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


@torch.no_grad()
def eval_images_per_second(bb, batch, steps, dev, precision="auto") -> float:
    from medclipsvd.engine.trainer import autocast_for

    bb.eval()
    x = torch.randn(batch, 3, bb.image_size, bb.image_size, device=dev)
    with autocast_for(dev, precision):
        bb.encode_image(x)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast_for(dev, precision):
            bb.encode_image(x)
    _sync(dev)
    return batch * steps / (time.perf_counter() - t0)


def project_suite(a: float, b: float, eval_ips: float) -> dict:
    """Seconds for the whole suite: sum over runs of iterations x (a + b * batch) + test-set evaluation."""
    train_s = eval_s = 0.0
    iters = 0
    for _, (c, hp, n_test) in suite_table().items():
        for k in SHOTS:
            n = c * k
            total = hp.total_iterations(n, k)
            bs = hp.batch_size
            # Batches cycle through the shuffled set: full batches of bs, then the remainder (the trainer's plan).
            per_epoch = [bs] * (n // bs) + ([n % bs] if n % bs else [])
            batches = [per_epoch[i % len(per_epoch)] for i in range(total)]
            train_s += SEEDS * sum(a + b * x for x in batches)
            iters += SEEDS * total
            eval_s += SEEDS * n_test / eval_ips
    return {"iterations": iters, "train_hours": train_s / 3600, "eval_hours": eval_s / 3600,
            "total_hours": (train_s + eval_s) / 3600}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="clip-vit-b16")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--small-batch", type=int, default=4, help="second batch size for the a + b*batch model")
    ap.add_argument("--classes", type=int, default=4, help="class prompts encoded per step")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16, as `train --precision`")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    from medclipsvd.backbones import load_backbone
    from medclipsvd.device import precision_plan, resolve_device
    from medclipsvd.svd import adapt, merge, sigma_parameters

    dev = resolve_device(args.device)
    prec = precision_plan(args.precision, dev).train  # refuses what this machine cannot run, as the CLI does
    t0 = time.perf_counter()
    bb = load_backbone(args.backbone, random_init=True)
    adapt(bb, args.preset)
    bb.to(dev)
    setup_s = time.perf_counter() - t0
    params = sigma_parameters(bb)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_big = time_steps(bb, params, args.classes, args.batch_size, args.steps, args.warmup, dev, prec)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    step_small = time_steps(bb, params, args.classes, args.small_batch, args.steps, args.warmup, dev, prec)
    b = (step_big - step_small) / (args.batch_size - args.small_batch)
    a = max(step_big - b * args.batch_size, 0.0)
    merge(bb)
    eval_ips = eval_images_per_second(bb, 64, max(2, args.steps // 2), dev, prec)
    proj = project_suite(a, b, eval_ips)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    result = {
        "command": "python " + " ".join(shlex.quote(x) for x in [sys.argv[0], *(argv or sys.argv[1:])]),
        "backbone": args.backbone, "preset": args.preset, "device": device_name,
        "precision": prec,  # what ran (medclipsvd/device.py decides what `--precision auto` means here)
        "trainable_sigma": sum(p.numel() for p in params.values()), "setup_seconds": round(setup_s, 1),
        "batch": args.batch_size, "steps_timed": args.steps,
        "seconds_per_step": round(step_big, 4), "train_images_per_second": round(args.batch_size / step_big, 2),
        f"seconds_per_step_batch{args.small_batch}": round(step_small, 4),
        "eval_images_per_second_merged": round(eval_ips, 1), "peak_gpu_memory_gib": None if peak_gib is None else round(peak_gib, 2),
        "projected_biomedical_few_shot_suite": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in proj.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return result


if __name__ == "__main__":
    main()
