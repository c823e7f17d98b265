"""Subprocess entry for the resume and DDP tests: trains the toy backbone and saves the final σ.

python train_worker.py OUT --steps N [--checkpoint-every K] [--resume] [--sleep S] [--batch-size B]
Under torchrun it joins a gloo process group first."""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy import ToyBackbone, ToyImages  # noqa: E402

from medclipsvd.engine.distributed import dist_info, init_distributed, shutdown_distributed  # noqa: E402
from medclipsvd.engine.trainer import TrainSettings, train  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--checkpoint-every", type=int, default=1)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--sleep", type=float, default=0.0)
ap.add_argument("--batch-size", type=int, default=8)
args = ap.parse_args()

init_distributed("cpu")
torch.set_num_threads(1)
bb = ToyBackbone()
ds = ToyImages(sleep=args.sleep)
settings = TrainSettings(lr=0.05, total_steps=args.steps, t_max=args.steps, weight_decay=0.01,
                         batch_size=args.batch_size, seed=3, device="cpu", checkpoint_every=args.checkpoint_every,
                         checkpoint_dir=str(Path(args.out) / "ckpt"), resume=args.resume, progress=False)
res = train(bb, bb.trainable(), ds, ["alpha", "beta", "gamma"], "a photo of a {}.", settings, text_trainable=True)
if dist_info().is_main:
    torch.save({k: v.detach().clone() for k, v in bb.trainable().items()} | {"losses": torch.tensor(res.losses)},
               Path(args.out) / "final.pt")
shutdown_distributed()
