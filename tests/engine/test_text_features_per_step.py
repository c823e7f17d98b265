"""No repeated text work (issue 19 item 3): a training step encodes the class prompts in one text-tower call for
all classes, and only while the text tower is trained; with a frozen text tower they are encoded once per run.
Evaluation encodes them once for the whole dataset. Counted on tiny-clip by wrapping its encode_text."""
from __future__ import annotations

import torch

CLASSES = ["benign", "malignant", "normal"]


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, size, size, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % len(CLASSES)


def _counted(bb) -> list[int]:
    """Prompts per encode_text call of `bb`, recorded as they happen."""
    calls: list[int] = []
    real = bb.encode_text

    def encode_text(tokens, *a, **kw):
        calls.append(int(tokens.shape[0]))
        return real(tokens, *a, **kw)

    bb.encode_text = encode_text
    return calls


def _train(text_trainable: bool, steps: int):
    from medclipsvd.backbones import load_backbone
    from medclipsvd.engine.trainer import TrainSettings, train
    from medclipsvd.svd import adapt, adapted_modules, sigma_parameters

    bb = load_backbone("tiny-clip")
    adapt(bb, "paper", cache_dir=False)
    towers = {name: info.tower for name, info in adapted_modules(bb).items()}
    assert set(towers.values()) == {"vision", "text"}  # the paper preset adapts both towers
    params = sigma_parameters(bb)
    if not text_trainable:  # σ of the vision tower only, the text tower frozen
        for name, p in params.items():
            p.requires_grad_(towers[name] != "text")
        params = {name: p for name, p in params.items() if towers[name] != "text"}
    calls = _counted(bb)
    settings = TrainSettings(lr=1e-3, total_steps=steps, t_max=steps, batch_size=2, device="cpu", progress=False,
                             amp="fp32")
    res = train(bb, params, _Images(6, bb.image_size), CLASSES, "a photo of a {}.", settings,
                text_trainable=text_trainable)
    assert res.steps == steps
    return calls


def test_a_trained_text_tower_encodes_all_prompts_in_one_call_per_step():
    steps = 4
    assert _train(text_trainable=True, steps=steps) == [len(CLASSES)] * steps


def test_a_frozen_text_tower_encodes_the_prompts_once_per_run():
    assert _train(text_trainable=False, steps=4) == [len(CLASSES)]


def test_evaluation_encodes_the_prompts_once_for_the_whole_dataset():
    from medclipsvd.backbones import load_backbone
    from medclipsvd.engine.evaluator import predict_probs

    bb = load_backbone("tiny-clip")
    calls = _counted(bb)
    probs, labels = predict_probs(bb, _Images(7, bb.image_size), CLASSES, "a photo of a {}.", "cpu", batch_size=2,
                                  num_workers=0, text_amp="fp32", image_amp="fp32")
    assert probs.shape == (7, len(CLASSES)) and len(labels) == 7
    assert calls == [len(CLASSES)]
