"""Subprocess entry for the resume and DDP tests: trains the toy backbone (or tiny-clip's real σ layers) and
saves the final trained tensors and the loss history.

python train_worker.py OUT --steps N [--checkpoint-every K] [--resume] [--sleep S] [--batch-size B]
                           [--model toy|tiny-clip] [--stop-after N]
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
ap.add_argument("--model", choices=["toy", "tiny-clip"], default="toy")
ap.add_argument("--stop-after", type=int, default=None)
args = ap.parse_args()

init_distributed("cpu")
torch.set_num_threads(1)
if args.model == "toy":
    bb = ToyBackbone()
    params, text_trainable, lr = bb.trainable(), True, 0.05
    ds = ToyImages(sleep=args.sleep)
else:
    from medclipsvd.backbones import load_backbone
    from medclipsvd.methods.svd import prepare_svd

    bb = load_backbone("tiny-clip")
    prep = prepare_svd(bb, lr=0.01)  # the σ of every paper-preset matrix of both towers
    params, text_trainable, lr = prep.params, prep.text_trainable, prep.lr
    ds = ToyImages(n_per_class=2, size=bb.image_size, sleep=args.sleep)
settings = TrainSettings(lr=lr, total_steps=args.steps, t_max=args.steps, weight_decay=0.01,
                         batch_size=args.batch_size, seed=3, device="cpu", checkpoint_every=args.checkpoint_every,
                         checkpoint_dir=str(Path(args.out) / "ckpt"), resume=args.resume, progress=False,
                         stop_after=args.stop_after)
res = train(bb, params, ds, ["alpha", "beta", "gamma"], "a photo of a {}.", settings, text_trainable=text_trainable)
if dist_info().is_main:
    torch.save({k: v.detach().clone() for k, v in params.items()} | {"losses": torch.tensor(res.losses)},
               Path(args.out) / "final.pt")
shutdown_distributed()
