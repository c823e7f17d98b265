"""Safety: damaged side files (torn checkpoint.json, broken results.json) are one clear error (issue 10, item 4)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyBackbone, ToyImages  # noqa: E402

from medclipsvd.engine.trainer import CheckpointError, TrainSettings, train  # noqa: E402
from medclipsvd.errors import MedClipSVDError  # noqa: E402


def _settings(tmp_path, resume):
    return TrainSettings(lr=0.05, total_steps=4, t_max=4, batch_size=6, seed=1, device="cpu", progress=False,
                         checkpoint_dir=str(tmp_path / "ckpt"), resume=resume, stop_after=None if resume else 2)


@pytest.mark.parametrize("damage", ["torn", "empty", "missing", "list"])
def test_torn_checkpoint_json_with_resume(tmp_path, damage):
    bb = ToyBackbone()
    train(bb, bb.trainable(), ToyImages(), ["a", "b", "c"], "a {}", _settings(tmp_path, False), text_trainable=True)
    meta = tmp_path / "ckpt" / "checkpoint.json"
    text = meta.read_text()
    if damage == "torn":
        meta.write_text(text[: len(text) // 2])
    elif damage == "empty":
        meta.write_text("")
    elif damage == "missing":
        meta.unlink()
    else:
        meta.write_text("[1, 2]")
    bb = ToyBackbone()
    with pytest.raises(CheckpointError) as info:
        train(bb, bb.trainable(), ToyImages(), ["a", "b", "c"], "a {}", _settings(tmp_path, True),
              text_trainable=True)
    msg = str(info.value)
    assert "\n" not in msg and "checkpoint.json" in msg and "without --resume" in msg, msg


@pytest.mark.parametrize("content", ["{\"run\": {", "[]", "{\"run\": 3}"])
def test_broken_results_json_beside_adapter(tmp_path, content):
    from medclipsvd.engine.adapter_evaluation import evaluate_adapter

    (tmp_path / "adapter").mkdir()
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(MedClipSVDError) as info:
        evaluate_adapter(str(tmp_path / "adapter"))
    msg = str(info.value)
    assert "\n" not in msg and "results.json" in msg and "--pipeline" in msg, msg
