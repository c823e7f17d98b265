"""`medclipsvd interpret` on transformers-format folders (`local-dir:` of a CLIPModel / SiglipModel written by
`save_pretrained`): CLIPModel works end to end (weight views and TextSpan head descriptions, the per-head
decomposition checked against the tower's own output); SigLIP gets the weight views, and asking it for head
descriptions is one clear refusal (its attention-pooling head mixes all tokens non-linearly)."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from medclipsvd.backbones import load_backbone
from medclipsvd.cli.app import app
from medclipsvd.interpret.contributions import HeadContributionRecorder, linearised_embedding
from medclipsvd.svd import adapt, save_adapter, sigma_parameters

TOWER = {"hidden_size": 32, "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4}
VISION = {**TOWER, "image_size": 32, "patch_size": 8}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _folder(tmp_path, model_type: str):
    import transformers

    from medclipsvd.backbones.tokenizers import generated_siglip_tokenizer

    torch.manual_seed(0)
    folder = tmp_path / model_type
    if model_type == "clip":
        config = transformers.CLIPConfig(text_config={**TOWER, "vocab_size": 49408, "max_position_embeddings": 77},
                                         vision_config=VISION, projection_dim=24)
        transformers.CLIPModel(config).save_pretrained(folder)
    else:
        config = transformers.SiglipConfig(text_config={**TOWER, "vocab_size": 334, "max_position_embeddings": 64,
                                                        "pad_token_id": 3, "eos_token_id": 3, "bos_token_id": 2},
                                           vision_config=VISION)
        transformers.SiglipModel(config).save_pretrained(folder)
        generated_siglip_tokenizer().save_pretrained(folder)
    return folder


def _adapter_and_images(tmp_path, folder):
    from PIL import Image

    bb = adapt(load_backbone(f"local-dir:{folder}"), "paper", cache_dir=False)
    with torch.no_grad():
        for i, p in enumerate(sigma_parameters(bb).values()):
            p.mul_(1.0 + 0.02 * (i % 5))
    adapter = save_adapter(bb, tmp_path / "adapter")
    images = tmp_path / "imgs"
    images.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        Image.fromarray((torch.rand(36, 36, 3, generator=g) * 255).byte().numpy()).save(images / f"{i}.png")
    return adapter, images


def _run(*args):
    result = CliRunner().invoke(app, ["interpret", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_clip_folder_heads_add_up_to_the_tower_output(tmp_path):
    bb = load_backbone(f"local-dir:{_folder(tmp_path, 'clip')}")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        rebuilt, real = linearised_embedding(bb.model.visual, x)
        torch.testing.assert_close(rebuilt, real, rtol=1e-4, atol=1e-5)
        with HeadContributionRecorder(bb.model.visual) as rec:  # raises when the heads do not add up
            bb.encode_image(x)
    contributions = rec.result()
    assert len(contributions) == 2 * 4 and rec.max_rel_error < 1e-4
    assert all(c.shape == (3, 24) for c in contributions.values())


def test_clip_folder_interpret_end_to_end(tmp_path):
    adapter, images = _adapter_and_images(tmp_path, _folder(tmp_path, "clip"))
    out = tmp_path / "report"
    res = _run("--adapter", adapter, "--images", images, "--output", out, "--heads", 2, "--texts", 3, "--no-mlflow")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["described_heads"]) == 2 and summary["n_images"] == 6
    assert "What the most changed vision heads encode (TextSpan)" in (out / "report.md").read_text()


def test_siglip_folder_weight_views_and_a_clear_refusal_of_head_descriptions(tmp_path, monkeypatch, capsys):
    adapter, images = _adapter_and_images(tmp_path, _folder(tmp_path, "siglip"))
    out = tmp_path / "report"
    res = _run("--adapter", adapter, "--output", out, "--no-mlflow")
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text()
    assert "## Relative σ change (layers × matrix types)" in md and "vision L1 H" in md
    import sys

    from medclipsvd.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medclipsvd", "interpret", "--adapter", str(adapter), "--images", str(images),
                                      "--output", str(tmp_path / "with-images"), "--no-mlflow"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "attention head" in lines[-1] and "without --images" in lines[-1]
    assert "Traceback" not in err and not (tmp_path / "with-images" / "report.md").exists()
