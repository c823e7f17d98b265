"""Training lowers the loss: ten σ-only steps on tiny-clip (random weights, real σ layers of both towers) make
the cross-entropy fall, both as the trainer reports it and as computed here from the backbone's logits on the
noise-free class patterns. A flipped loss sign, a schedule stuck at zero or an optimiser stepping the wrong
tensors turns this red."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyImages  # noqa: E402

CLASSES = ["benign", "malignant", "normal"]
TEMPLATE = "a photo of a {}."


def _held_out_loss(bb, data: ToyImages) -> float:
    """Mean cross-entropy of the class patterns themselves (no noise) under the backbone's logits."""
    with torch.no_grad():
        logits = bb(data.protos, bb.tokenize([TEMPLATE.format(c) for c in CLASSES]))
    return float(F.cross_entropy(logits.float(), torch.arange(len(CLASSES))))


def test_ten_steps_lower_the_loss_on_tiny_clip():
    from medclipsvd.backbones import load_backbone
    from medclipsvd.methods.svd import prepare_svd
    from medclipsvd.engine.trainer import TrainSettings, train

    torch.manual_seed(0)
    bb = load_backbone("tiny-clip")
    prep = prepare_svd(bb, lr=0.01)
    assert prep.text_trainable and len(prep.params) == 72  # both towers' σ, nothing else
    data = ToyImages(n_per_class=2, size=bb.image_size)
    bb.eval()
    before = _held_out_loss(bb, data)
    settings = TrainSettings(lr=prep.lr, total_steps=10, t_max=10, batch_size=6, seed=0, device="cpu",
                             progress=False)
    result = train(bb, prep.params, data, CLASSES, TEMPLATE, settings, text_trainable=True)
    bb.eval()
    after = _held_out_loss(bb, data)
    losses = result.losses
    assert len(losses) == 10 and result.final_loss == losses[-1]
    # measured (CPython 3.11, torch CPU): reported 1.117 -> 0.868, patterns 1.118 -> 0.851; margins are ~40 %
    # of the fall, so thread counts and kernels do not matter
    assert losses[-1] < losses[0] - 0.15, losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses
    assert after < before - 0.1, (before, after)
