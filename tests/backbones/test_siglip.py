"""SigLIP / SigLIP2 through open_clip: targets of both towers (the attention-pool head frozen), exact at init,
logits = the model's own scale · cos + bias, prompts never cut, tokenizers offline, counts of the full-size
architectures (built on the meta device), and the baselines running on the tiny variant."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from medclipsvd.backbones import get_spec, load_backbone
from medclipsvd.backbones.backbone import Backbone, _build_model
from medclipsvd.backbones.openclip_arch import openclip_model_cfg, unsupported_reason
from medclipsvd.backbones.tokenizers import build_tokenizer, generated_siglip_tokenizer
from medclipsvd.errors import WeightsNotAvailableError
from medclipsvd.svd import adapt, adapted_modules, sigma_parameters, trainable_count
from medclipsvd.svd.targets import sigma_total

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "A chest X-ray of COVID lungs!"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _images(size, n=2, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_tiny_siglip_is_exact_at_init_with_sigma_in_both_towers(tmp_path):
    bb = load_backbone("tiny-siglip")
    x, tokens = _images(bb.image_size), bb.tokenize(PROMPTS)
    with torch.no_grad():
        before = bb(x, tokens).double()
    adapt(bb, "paper", cache_dir=tmp_path / "svd")
    with torch.no_grad():
        after = bb(x, tokens).double()
    assert (after - before).abs().max().item() <= 1e-4
    # 6 blocks of width 64 in each tower, MLP 4x wider: 6 · (4·64 + 2·64) σ per tower
    assert trainable_count(bb) == 2 * 6 * (4 * 64 + 2 * 64) == 4608
    towers = {info.tower for info in adapted_modules(bb).values()}
    assert towers == {"vision", "text"}


def test_attention_pool_head_is_frozen_and_not_a_target(tmp_path):
    bb = adapt(load_backbone("tiny-siglip"), "paper", cache_dir=tmp_path / "svd")
    names = list(sigma_parameters(bb))
    assert names and not any("attn_pool" in n for n in names)
    head = bb.model.visual.trunk.attn_pool
    assert {"q", "kv", "proj"} <= {n for n, _ in head.named_children()}  # the matrices the decision is about
    assert not any(p.requires_grad for p in head.parameters())
    assert not bb.model.logit_bias.requires_grad and not bb.model.logit_scale.requires_grad


def test_logits_are_the_models_own_scale_cos_plus_bias():
    """Against open_clip's own encoders (its TextTransformer forward, not medclipsvd's text path)."""
    bb = load_backbone("tiny-siglip", seed=3)
    x, tokens = _images(bb.image_size, seed=1), bb.tokenize(PROMPTS)
    with torch.no_grad():
        img = F.normalize(bb.model.encode_image(x), dim=-1)
        txt = F.normalize(bb.model.encode_text(tokens), dim=-1)
        expected = bb.model.logit_scale.exp() * img @ txt.T + bb.model.logit_bias
        got = bb(x, tokens)
    assert float(bb.logit_bias) == -10.0  # init_logit_bias of the config
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the bias is the same for every class: softmax (the classification rule) is unchanged by it
    torch.testing.assert_close(got.softmax(-1), (got - bb.logit_bias).softmax(-1), rtol=1e-6, atol=1e-7)


def test_prompts_are_padded_to_the_full_context_never_cut():
    """SigLIP's text tower attends to the padding, so cutting would change the embedding."""
    bb = load_backbone("tiny-siglip")
    tokens = bb.tokenize(PROMPTS)
    assert tokens.shape == (3, 64)
    eos = generated_siglip_tokenizer().eos_token_id
    assert (tokens[:, -1] == eos).all()  # padded with the end token, as SigLIP's T5 tokenizer does
    short = bb.tokenizer(["a photo"], cut=True)
    with torch.no_grad():
        full = bb.encode_text(bb.tokenize(["a photo"]))
        cut = bb.encode_text(short[:, :3])
    assert not torch.allclose(full, cut, atol=1e-3)


def test_prompts_are_canonicalised_like_siglip_training():
    bb = load_backbone("tiny-siglip")
    torch.testing.assert_close(bb.tokenize(["A chest X-ray, of COVID lungs!"]),
                               bb.tokenize(["a chest xray of covid lungs"]))


def test_full_size_tokenizer_offline(offline):
    spec = get_spec("ViT-B-16-SigLIP")
    assert spec.family == "openclip-siglip" and spec.tokenizer.source == "hf-hub:timm/ViT-B-16-SigLIP"
    assert spec.preprocess.mean == (0.5, 0.5, 0.5)
    # random weights: a generated SigLIP-shaped tokenizer stands in (ids are meaningless for random weights)
    tok = build_tokenizer(spec, random_init=True)
    assert tok.name == "generated-siglip" and tok(["a photo"]).shape == (1, 64)
    # real weights need the real tokenizer: one clear message with what to download and --text-dir
    with pytest.raises(WeightsNotAvailableError, match="timm/ViT-B-16-SigLIP.*--text-dir"):
        build_tokenizer(spec, random_init=False)


def test_text_dir_with_sentencepiece_style_files(tmp_path, offline):
    generated_siglip_tokenizer().save_pretrained(tmp_path / "tok")
    tok = build_tokenizer(get_spec("ViT-B-16-SigLIP"), text_dir=str(tmp_path / "tok"))
    assert tok(["a photo"]).shape == (1, 64) and not tok.cuts
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotAvailableError, match="expected one of tokenizer.json"):
        build_tokenizer(get_spec("ViT-B-16-SigLIP"), text_dir=str(tmp_path / "empty"))


def test_open_clip_format_siglip_folder_reads_its_tokenizer(tmp_path, offline):
    """A `local-dir:` SigLIP in open_clip format (as timm/ViT-B-16-SigLIP is published), tokenizer files beside it."""
    src = load_backbone("tiny-siglip", seed=5)
    folder = tmp_path / "siglip"
    folder.mkdir()
    cfg = {**get_spec("tiny-siglip").model_cfg}
    cfg["text_cfg"] = {**cfg["text_cfg"], "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                       "tokenizer_kwargs": {"clean": "canonicalize"}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    generated_siglip_tokenizer().save_pretrained(folder)
    bb = load_backbone(f"local-dir:{folder}")
    assert bb.family == "openclip-siglip" and bb.fingerprint() == src.fingerprint()
    assert bb.spec.tokenizer.kind == "hf-auto" and bb.mean == (0.5, 0.5, 0.5)
    x = _images(224)
    with torch.no_grad():
        torch.testing.assert_close(bb(x, bb.tokenize(PROMPTS)), src(x, src.tokenize(PROMPTS)), rtol=1e-6, atol=1e-6)


def test_architecture_name_with_a_weights_folder_uses_the_tokenizer_in_it(tmp_path, monkeypatch, offline):
    """`hf download timm/ViT-B-16-SigLIP --local-dir DIR` brings weights and tokenizer: --weights local-dir:DIR
    is enough offline (shown with a user backbone file holding tiny-siglip's architecture and SigLIP's tokenizer)."""
    user = tmp_path / "backbones"
    user.mkdir()
    cfg = {**get_spec("tiny-siglip").model_cfg}
    cfg["text_cfg"] = {**cfg["text_cfg"], "hf_tokenizer_name": "timm/ViT-B-16-SigLIP"}
    (user / "mine.json").write_text(json.dumps({"name": "my-siglip", "model_cfg": cfg}))
    monkeypatch.setenv("MEDCLIPSVD_BACKBONE_DIR", str(user))
    assert get_spec("my-siglip").tokenizer.source == "hf-hub:timm/ViT-B-16-SigLIP"
    src = load_backbone("tiny-siglip", seed=2)
    weights = tmp_path / "weights"
    weights.mkdir()
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()},
              str(weights / "open_clip_model.safetensors"))
    with pytest.raises(WeightsNotAvailableError, match="--text-dir"):
        load_backbone("my-siglip", weights=f"local-dir:{weights}")
    generated_siglip_tokenizer().save_pretrained(weights)
    bb = load_backbone("my-siglip", weights=f"local-dir:{weights}")
    assert bb.tokenizer.name == f"hf:{weights}" and bb.fingerprint() == src.fingerprint()



def test_bundled_backbone_carries_the_siglip_tokenizer(tmp_path, monkeypatch, offline):
    """`register --bundle-backbone` of an open_clip SigLIP (tokenizer read by AutoTokenizer: from the hub cache,
    a folder or --text-dir) stores that tokenizer with the weights: the served model tokenizes the same with the
    weights folder gone."""
    from medclipsvd.serving.trained_run import build_backbone
    from medclipsvd.tracking.registry import _bundle

    user = tmp_path / "backbones"
    user.mkdir()
    cfg = {**get_spec("tiny-siglip").model_cfg}
    cfg["text_cfg"] = {**cfg["text_cfg"], "hf_tokenizer_name": "timm/ViT-B-16-SigLIP"}
    (user / "mine.json").write_text(json.dumps({"name": "my-siglip", "model_cfg": cfg}))
    monkeypatch.setenv("MEDCLIPSVD_BACKBONE_DIR", str(user))
    src = load_backbone("tiny-siglip", seed=3)
    weights = tmp_path / "weights"
    weights.mkdir()
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()},
              str(weights / "open_clip_model.safetensors"))
    generated_siglip_tokenizer().save_pretrained(weights)
    bb = load_backbone("my-siglip", weights=f"local-dir:{weights}")
    config = {"backbone": {"name": "my-siglip", "source": f"local-dir:{weights}", "fingerprint": bb.fingerprint()}}
    artifacts = _bundle(config, tmp_path / "bundle", None, None)
    assert set(artifacts) == {"backbone", "tokenizer"}
    for f in weights.iterdir():
        f.unlink()
    weights.rmdir()
    served = build_backbone(config, bundle=artifacts["backbone"], tokenizer_dir=artifacts["tokenizer"])
    assert served.fingerprint() == bb.fingerprint()
    assert torch.equal(served.tokenize(PROMPTS), bb.tokenize(PROMPTS))


def _meta_backbone(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = _build_model(spec)
    return Backbone(spec, model, build_tokenizer(spec, random_init=True), "meta")


@pytest.mark.parametrize("name, vision, text, expected", [
    # (layers, width) per tower; σ per tower = 6·L·w (every MLP here is wider than its block)
    ("ViT-B-16-SigLIP", (12, 768), (12, 768), 110_592),
    ("ViT-B-16-SigLIP2", (12, 768), (12, 768), 110_592),
    ("ViT-L-16-SigLIP-256", (24, 1024), (24, 1024), 294_912),
    ("ViT-SO400M-14-SigLIP", (27, 1152), (27, 1152), 373_248),
])
def test_full_size_counts_follow_the_widths(name, vision, text, expected, offline):
    bb = _meta_backbone(name)
    assert (bb.num_layers("vision"), bb.blocks("vision")[0].attn.qkv.in_features) == vision
    assert (bb.num_layers("text"), bb.blocks("text")[0].attn.embed_dim) == text
    assert sigma_total(bb) == 6 * (vision[0] * vision[1] + text[0] * text[1]) == expected


@pytest.mark.slow
def test_every_open_clip_siglip_architecture_builds_and_is_counted(offline):
    from medclipsvd.backbones.openclip_arch import classify, list_openclip_architectures

    names = [n for n in list_openclip_architectures() if classify(openclip_model_cfg(n))[0] == "openclip-siglip"]
    assert len(names) >= 20
    for name in names:
        assert unsupported_reason(openclip_model_cfg(name)) is None
        bb = _meta_backbone(name)
        expected = sum(bb.num_layers(t) * (4 * w + 2 * min(w, h)) for t, (w, h) in {
            "vision": (bb.blocks("vision")[0].mlp.fc1.in_features, bb.blocks("vision")[0].mlp.fc1.out_features),
            "text": (bb.blocks("text")[0].mlp.c_fc.in_features, bb.blocks("text")[0].mlp.c_fc.out_features)}.items())
        assert sigma_total(bb) == expected, name


@pytest.mark.slow
def test_vit_b16_siglip_full_size_summary_acceptance(tmp_path):
    """The acceptance command, offline with random weights: 110,592 σ and exact at init."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "MEDCLIPSVD_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "medclipsvd", "summary", "--backbone", "ViT-B-16-SigLIP",
                          "--random-init", "--json"], capture_output=True, text=True, timeout=5400, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["trainable_params"] == 110_592 and result["family"] == "openclip-siglip"
    assert result["max_abs_logit_diff"] <= 1e-4


@pytest.mark.parametrize("method", ["svd", "zero_shot", "linear_probe"])
def test_training_and_baselines_run_on_tiny_siglip(method, tmp_path_factory):
    from medclipsvd import api
    from medclipsvd.engine.synthetic import write_synthetic_dataset

    base = tmp_path_factory.mktemp(f"siglip-{method}")
    data = write_synthetic_dataset(base / "data", patients_per_class=2, images_per_patient=1, size=24)
    results = api.run_pipeline(str(REPO / "pipelines" / "demo.yaml"), data, base / "run", backbone="tiny-siglip",
                               method=method, shots=1, max_steps=2, device="cpu", progress=False, plots=False)
    test = results["eval"]["test"]
    assert test["n"] >= 3 and 0.0 <= test["accuracy"] <= 100.0
    assert (base / "run" / "adapter").is_dir() == (method == "svd")
