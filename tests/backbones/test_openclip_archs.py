"""Any open_clip CLIP ViT as a backbone: architectures by name, open_clip configs from local-dir: / hf-hub:,
user backbone files, refusals that name what is missing, and parity (counts from the widths, exact at init)."""
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from medclipsvd.backbones import get_spec, list_backbones, load_backbone
from medclipsvd.backbones.backbone import HF_TEXT_CONFIGS, Backbone, _build_model
from medclipsvd.backbones.openclip_arch import (UnsupportedArchitectureError, family_of, list_openclip_architectures,
                                                openclip_model_cfg, sigma_count, unsupported_reason)
from medclipsvd.backbones.tokenizers import GENERATED_VOCAB, build_tokenizer
from medclipsvd.errors import BackboneNotFoundError, WeightsNotAvailableError
from medclipsvd.svd import adapt, trainable_count
from medclipsvd.svd.targets import sigma_total

PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "a chest xray of covid lungs."]

# A tiny open_clip ViT that exercises what differs between the family's members: GELU (not QuickGELU),
# mlp_ratio != 4, head_width, patch 32, LayerScale (the "-alt" configs), an image size other than 224.
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 48, "head_width": 16, "patch_size": 32,
                   "mlp_ratio": 2.0, "ls_init_value": 1e-1},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2,
                 "mlp_ratio": 0.5},
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _meta_backbone(name):
    """The full-size architecture built on the meta device: shapes without memory or time."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = _build_model(spec)
    return Backbone(spec, model, build_tokenizer(spec, random_init=True), "meta")


@pytest.mark.parametrize("name, expected", [
    ("ViT-B-32", 92_160), ("ViT-B-16", 92_160), ("ViT-L-14", 202_752), ("ViT-L-14-336", 202_752),
    ("ViT-H-14", 393_216), ("ViT-bigG-14", 724_992), ("ViT-M-16-alt", 64_512), ("ViT-B-32-quickgelu", 92_160),
])
def test_trainable_count_of_full_size_architectures_follows_their_widths(name, expected):
    cfg = openclip_model_cfg(name)
    assert sigma_count(cfg)["total"] == expected  # 6·(L_v·w_v + L_t·w_t) when the MLP is wider than the block
    bb = _meta_backbone(name)
    assert bb.num_layers("vision") == cfg["vision_cfg"]["layers"]
    assert bb.num_layers("text") == cfg["text_cfg"]["layers"]
    assert sigma_total(bb, "paper") == expected
    assert sigma_total(bb, {"towers": "vision", "matrices": ["q", "v"], "layers": "top"}) == \
        2 * cfg["vision_cfg"]["width"] * len([i for i in range(cfg["vision_cfg"]["layers"])
                                              if i >= round(2 * cfg["vision_cfg"]["layers"] / 3)])


@pytest.mark.slow
def test_every_supported_architecture_is_found_and_counted():
    supported = [a for a in list_openclip_architectures() if unsupported_reason(openclip_model_cfg(a)) is None]
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-g-14"} <= set(supported)
    vit = [a for a in supported if family_of(openclip_model_cfg(a)) == "openclip-vit"]
    assert len(vit) > 5  # SigLIP architectures are counted by tests/backbones/test_siglip.py
    for name in vit:
        assert sigma_total(_meta_backbone(name)) == sigma_count(openclip_model_cfg(name))["total"], name


@pytest.mark.parametrize("name, missing", [
    ("nllb-clip-base-siglip", "nllb-200"), ("ViT-L-14-worldwide", "mt5-base"), ("MobileCLIP-S1", "fastvit_mci1"),
    ("coca_ViT-B-32", "CoCa"), ("RN50", "ModifiedResNet"), ("EVA02-B-16", "eva02"),
    ("roberta-ViT-B-32", "roberta-base"), ("ViT-L-14-CLIPA", "causal mask"), ("convnext_base", "convnext"),
])
def test_other_families_are_refused_naming_what_is_missing(name, missing):
    with pytest.raises(UnsupportedArchitectureError, match=missing) as err:
        load_backbone(name, random_init=True)
    assert "docs/backbones.md" in str(err.value)


def test_unknown_names_say_what_is_accepted():
    with pytest.raises(BackboneNotFoundError, match="open_clip architecture.*hf-hub:ORG/REPO.*local-dir:DIR"):
        get_spec("ViT-Q-99")


def test_architecture_without_weights_names_the_tags(offline):
    with pytest.raises(WeightsNotAvailableError, match="laion2b_s34b_b79k.*--random-init"):
        load_backbone("ViT-B-32")


def test_pretrained_tag_resolves_to_its_hub_repo_offline(offline):
    with pytest.raises(WeightsNotAvailableError, match="timm/vit_base_patch32_clip_224.openai"):
        load_backbone("ViT-B-32", weights="openai")
    with pytest.raises(WeightsNotAvailableError, match="tags of ViT-B-32: .*openai"):
        load_backbone("ViT-B-32", weights="no_such_tag")


def test_openai_tag_switches_to_quickgelu():
    from medclipsvd.backbones.backbone import _spec_for_tag

    spec, location, files = _spec_for_tag(get_spec("ViT-B-32"), "openai")
    assert spec.model_cfg["quick_gelu"] is True and location == "hf-hub:timm/vit_base_patch32_clip_224.openai"
    assert "quick_gelu" not in get_spec("ViT-B-32").model_cfg  # the cached spec is left alone


def test_random_init_of_an_architecture_never_touches_the_network(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("network access during random init")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    bb = load_backbone("ViT-S-32", random_init=True)
    assert bb.family == "openclip-vit" and bb.num_layers("vision") == 12


# -- the family at tiny size: exact at init, counts from the widths, all weight sources -------------------
def _write_open_clip_dir(folder, model_cfg, state, extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        **(extra or {})}))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "backbones"
    folder.mkdir()
    monkeypatch.setenv("MEDCLIPSVD_BACKBONE_DIR", str(folder))
    return folder


def test_user_backbone_file_adapts_exactly_with_counts_from_widths(user_dir, tmp_path):
    (user_dir / "tiny-vit-variant.json").write_text(json.dumps(
        {"name": "tiny-vit-variant", "description": "test", "model_cfg": TINY_CFG}))
    assert "tiny-vit-variant" in list_backbones()
    bb = load_backbone("tiny-vit-variant", random_init=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = bb(images, bb.tokenize(PROMPTS)).double()
    adapt(bb, "paper", cache_dir=tmp_path / "svd")
    with torch.no_grad():
        after = bb(images, bb.tokenize(PROMPTS)).double()
    assert ((after - before).abs().max() / before.abs().max()).item() < 1e-4
    # vision 3·(4·48 + 2·48) + text 2·(4·32 + 2·16): the text MLP (16 wide) is narrower than the block
    assert trainable_count(bb) == sigma_count(TINY_CFG)["total"] == 3 * 288 + 2 * 160


def test_user_backbone_file_by_architecture_name(user_dir):
    (user_dir / "mine.json").write_text(json.dumps(
        {"name": "my-vit-s32", "architecture": "ViT-S-32",
         "pretrained": {"source": "hf-hub:example/not-downloaded"}}))
    spec = get_spec("my-vit-s32")
    assert spec.family == "openclip-vit" and spec.model_cfg["vision_cfg"]["width"] == 384
    assert spec.pretrained.weight_files == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


@pytest.mark.parametrize("content, message", [
    ({"name": "x", "architecture": "ViT-Q-99"}, "not an open_clip architecture"),
    ({"name": "x", "architecture": "RN50"}, "ModifiedResNet"),
    ({"name": "tiny-clip", "model_cfg": TINY_CFG}, "defined twice"),
    ({"description": "no name", "model_cfg": TINY_CFG}, "name"),
])
def test_bad_user_backbone_files_are_named(user_dir, content, message):
    (user_dir / "bad.json").write_text(json.dumps(content))
    with pytest.raises(BackboneNotFoundError, match=message) as err:
        list_backbones()
    assert "bad.json" in str(err.value) or "tiny-clip.json" in str(err.value)


def test_local_dir_open_clip_model_round_trip(tmp_path, offline):
    src = load_backbone("tiny-clip", seed=4)
    folder = tmp_path / "model"
    _write_open_clip_dir(folder, get_spec("tiny-clip").model_cfg, src.model.state_dict())
    bb = load_backbone(f"local-dir:{folder}")
    assert bb.fingerprint() == src.fingerprint() and bb.mean == (0.5, 0.5, 0.5) and bb.image_size == 224
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(bb(x, bb.tokenize(PROMPTS)), src(x, src.tokenize(PROMPTS)), rtol=1e-6, atol=1e-6)


def test_hf_hub_open_clip_model_reads_its_config_from_the_hub(tmp_path, monkeypatch):
    """hf-hub:ORG/REPO: the config and weights come through the hub download (stubbed: no network here)."""
    from medclipsvd.backbones import sources

    folder = tmp_path / "hub-repo"
    src = load_backbone("tiny-clip", seed=5)
    _write_open_clip_dir(folder, get_spec("tiny-clip").model_cfg, src.model.state_dict())
    asked = []
    monkeypatch.setattr(sources, "_hf_download", lambda repo, name, allow_network=True: (
        asked.append((repo, name)) or (folder / name if (folder / name).is_file() else None)))
    bb = load_backbone("hf-hub:example-org/tiny-open-clip")
    assert bb.fingerprint() == src.fingerprint() and bb.source == "hf-hub:example-org/tiny-open-clip"
    assert ("example-org/tiny-open-clip", "open_clip_config.json") in asked


def test_biomedclip_style_open_clip_dir_with_a_bert_text_tower(tmp_path, offline):
    """A BiomedCLIP-format open_clip_config.json (timm ViT + HF BERT): the text config and tokenizer are read from
    the folder, the layouts are found, and the weights load."""
    src = load_backbone("tiny-biomedclip", seed=2)
    folder = tmp_path / "biomed"
    bert = str(HF_TEXT_CONFIGS / "tiny-bert")
    cfg = {"embed_dim": 64,
           "vision_cfg": {"timm_model_name": "medclipsvd_tiny_vit", "timm_model_pretrained": False,
                          "timm_pool": "", "timm_proj": "linear", "image_size": 224},
           "text_cfg": {"hf_model_name": bert, "hf_tokenizer_name": bert, "hf_proj_type": "mlp",
                        "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256}}
    _write_open_clip_dir(folder, cfg, src.model.state_dict())
    shutil.copy(GENERATED_VOCAB, folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                              "do_lower_case": True}))
    bb = load_backbone(f"local-dir:{folder}")
    assert bb.family == "timm-bert" and bb.fingerprint() == src.fingerprint()
    assert bb.layout("vision").attention == "fused" and bb.layout("text").attention == "separate"
    assert sigma_total(bb) == 6 * 64 * 6 + 6 * 64 * bb.num_layers("text")


@pytest.mark.slow
def test_vit_b32_full_size_summary_matches_the_paper_count():
    """The acceptance command: 92,160 σ (the paper's count: ViT-B/32 has ViT-B/16's widths) and exact at init."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "medclipsvd", "summary", "--backbone", "ViT-B-32", "--random-init",
                          "--json"], capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["trainable_params"] == 92_160 == sigma_count(openclip_model_cfg("ViT-B-32"))["total"]
    assert result["max_abs_logit_diff"] <= 1e-4


def test_architecture_name_with_weights_folder_keeps_its_declared_quickgelu(tmp_path):
    """OpenAI-trained weights need QuickGELU; the folder's open_clip_config.json says so and is obeyed."""
    cfg = {**openclip_model_cfg("ViT-S-32"), "quick_gelu": True}
    src = load_backbone("ViT-S-32", random_init=True)
    _write_open_clip_dir(tmp_path / "w", cfg, src.model.state_dict())
    bb = load_backbone("ViT-S-32", weights=f"local-dir:{tmp_path / 'w'}")
    assert bb.spec.model_cfg["quick_gelu"] is True and bb.fingerprint() == src.fingerprint()
    assert type(bb.blocks("vision")[0].mlp.gelu).__name__ == "QuickGELU"
