"""transformers CLIPModel / SiglipModel folders as `--backbone local-dir:DIR` (and `hf-hub:` ids), table-driven:
the folders are written by `transformers.<Model>(<tiny config>).save_pretrained(DIR)`; σ targets of both towers,
exact at init, logits equal to transformers' own forward, weight formats (safetensors, shards, weights-only
.bin), tokenizers (the folder's files, the family's standard one, clear errors offline), adapters bound to the
base weights, merge, and the commands summary / train / predict / export on them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from medclipsvd.backbones import get_spec, load_backbone
from medclipsvd.backbones.tokenizers import build_tokenizer, generated_siglip_tokenizer
from medclipsvd.errors import AdapterMismatchError, MedClipSVDError, WeightsNotAvailableError
from medclipsvd.svd import adapt, load_adapter, merge, save_adapter, sigma_parameters, trainable_count

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal brain.", "a chest xray of covid lungs."]
TOWER = {"hidden_size": 32, "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4}

# model_type -> (text config, vision config, whether the folder gets tokenizer files)
CASES = {
    # no tokenizer files: CLIP's standard BPE (ships with open_clip), so the vocabulary is CLIP's
    "clip": ({**TOWER, "vocab_size": 49408, "max_position_embeddings": 77},
             {**TOWER, "image_size": 32, "patch_size": 8}, False),
    # SiglipModel.save_pretrained writes no tokenizer: the test saves a small SigLIP-shaped one beside it
    "siglip": ({**TOWER, "vocab_size": 334, "max_position_embeddings": 64, "pad_token_id": 3, "eos_token_id": 3,
                "bos_token_id": 2}, {**TOWER, "image_size": 32, "patch_size": 8}, True),
}


def _hf_model(model_type: str, seed: int = 0):
    import transformers

    text, vision, _ = CASES[model_type]
    config_cls, model_cls = {"clip": (transformers.CLIPConfig, transformers.CLIPModel),
                             "siglip": (transformers.SiglipConfig, transformers.SiglipModel)}[model_type]
    extra = {"projection_dim": 24} if model_type == "clip" else {}
    torch.manual_seed(seed)
    return model_cls(config_cls(text_config=text, vision_config=vision, **extra)).eval()


def write_folder(folder: Path, model_type: str, seed: int = 0, **save_kwargs) -> Path:
    _hf_model(model_type, seed).save_pretrained(folder, **save_kwargs)
    if CASES[model_type][2]:
        generated_siglip_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(CASES))
def folder(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, write_folder(tmp_path_factory.mktemp(request.param) / "model", request.param)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _images(n=2, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _expected_sigma():
    # both towers: 2 layers, width 32, MLP 80 wide: 4·32 + 2·min(32, 80) per layer
    return 2 * 2 * (4 * 32 + 2 * 32)


def test_family_targets_and_exactness_at_init(folder, offline, tmp_path):
    model_type, path = folder
    bb = load_backbone(f"local-dir:{path}")
    assert bb.family == f"hf-{model_type}" and bb.image_size == 32
    assert bb.layout("vision").paths["q"] == "self_attn.q_proj" and bb.num_layers("text") == 2
    x, tokens = _images(), bb.tokenize(PROMPTS)
    with torch.no_grad():
        before = bb(x, tokens).double()
    adapt(bb, "paper", cache_dir=tmp_path / "svd")
    with torch.no_grad():
        after = bb(x, tokens).double()
    assert (after - before).abs().max().item() <= 1e-4
    assert trainable_count(bb) == _expected_sigma()
    names = list(sigma_parameters(bb))
    assert any(n.startswith("visual.model.encoder.layers.0.self_attn.q_proj") for n in names)
    assert any(n.startswith("text.model.encoder.layers.1.mlp.fc2") for n in names)
    assert not any(".head." in n or "projection" in n or n.startswith(("visual.proj", "text.proj")) for n in names)


def test_logits_equal_the_transformers_forward(folder, offline):
    """scale · cos (+ SigLIP's bias), against transformers' own CLIPModel / SiglipModel forward."""
    import transformers

    model_type, path = folder
    bb = load_backbone(f"local-dir:{path}")
    reference = transformers.AutoModel.from_pretrained(path).eval()
    x = _images(seed=3)
    tokens = bb.tokenizer(PROMPTS, cut=False)  # transformers sees the full context
    with torch.no_grad():
        expected = reference(input_ids=tokens, pixel_values=x).logits_per_image
        got = bb(x, bb.tokenize(PROMPTS))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if model_type == "siglip":
        assert float(bb.logit_bias) == pytest.approx(float(reference.logit_bias.detach()))
        assert bb.tokenize(PROMPTS).shape[1] == 64  # padded, never cut
    else:
        assert float(bb.logit_bias) == 0.0 and bb.tokenize(PROMPTS).shape[1] < 77


def test_legacy_clip_config_pooling_at_the_highest_token_id(tmp_path, offline):
    """Older CLIP configs (openai/clip-vit-base-patch32) say eos_token_id 2: transformers then pools at the
    highest id of each prompt, which with CLIP's BPE is the end-of-text token: still the same logits."""
    import transformers

    text = {**CASES["clip"][0], "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1}
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=CASES["clip"][1]))
    model.save_pretrained(tmp_path / "m")
    bb = load_backbone(f"local-dir:{tmp_path / 'm'}")
    x = _images(seed=5)
    with torch.no_grad():
        expected = model.eval()(input_ids=bb.tokenizer(PROMPTS, cut=False), pixel_values=x).logits_per_image
        torch.testing.assert_close(bb(x, bb.tokenize(PROMPTS)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_sharded_and_weights_only_bin_checkpoints(model_type, tmp_path, offline):
    base = load_backbone(f"local-dir:{write_folder(tmp_path / 'plain', model_type, seed=1)}")
    sharded = write_folder(tmp_path / "sharded", model_type, seed=1, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert load_backbone(f"local-dir:{sharded}").fingerprint() == base.fingerprint()
    binary = write_folder(tmp_path / "bin", model_type, seed=1)
    state = _hf_model(model_type, seed=1).state_dict()
    (binary / "model.safetensors").unlink()
    torch.save(state, binary / "pytorch_model.bin")
    assert load_backbone(f"local-dir:{binary}").fingerprint() == base.fingerprint()


def test_pickled_bin_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = write_folder(tmp_path / "m", "clip")
    (folder / "model.safetensors").unlink()
    torch.save({"x": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsNotAvailableError, match="not a plain tensor checkpoint"):
        load_backbone(f"local-dir:{folder}")


def test_adapter_round_trip_is_bound_to_the_base_weights(folder, tmp_path, offline):
    model_type, path = folder
    bb = adapt(load_backbone(f"local-dir:{path}"), "paper", cache_dir=tmp_path / "svd")
    with torch.no_grad():
        for p in sigma_parameters(bb).values():
            p.mul_(1.05)
    x, prompts = _images(seed=4), PROMPTS[:2]
    with torch.no_grad():
        adapted = bb(x, bb.tokenize(prompts))
    save_adapter(bb, tmp_path / "adapter")
    restored = load_adapter(load_backbone(f"local-dir:{path}"), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(restored(x, restored.tokenize(prompts)), adapted, rtol=1e-5, atol=1e-5)
        merged = merge(restored)
        torch.testing.assert_close(merged(x, merged.tokenize(prompts)), adapted, rtol=1e-4, atol=1e-4)
    assert type(merged.model.visual.model.encoder.layers[0].self_attn.q_proj) is torch.nn.Linear
    # the same folder name with other weights is another base: refused
    other = write_folder(tmp_path / "other", model_type, seed=7)
    for f in other.iterdir():
        target = tmp_path / "swapped" / f.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config["backbone"]["name"] = f"local-dir:{tmp_path / 'swapped'}"
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterMismatchError, match="fingerprint"):
        load_adapter(load_backbone(f"local-dir:{tmp_path / 'swapped'}"), tmp_path / "adapter")


def test_a_moved_model_folder_keeps_its_adapters(folder, tmp_path, offline):
    """A model named by its folder is identified by its weights: after the folder moves, its adapters load on it
    under the new name (or with the new place as weights=), with the same logits; another model's folder, and a
    registry backbone, are still refused."""
    import shutil

    model_type, path = folder
    original = Path(shutil.copytree(path, tmp_path / "original"))
    bb = adapt(load_backbone(f"local-dir:{original}"), "paper", cache_dir=tmp_path / "svd")
    with torch.no_grad():
        for p in sigma_parameters(bb).values():
            p.mul_(0.97)
    x, prompts = _images(seed=5), PROMPTS
    with torch.no_grad():
        adapted = bb(x, bb.tokenize(prompts))
    save_adapter(bb, tmp_path / "adapter")
    moved = original.rename(tmp_path / "moved")
    with pytest.raises(WeightsNotAvailableError, match="moved"):
        load_backbone(f"local-dir:{original}")
    for base in (load_backbone(f"local-dir:{moved}"),
                 load_backbone(f"local-dir:{original}", weights=f"local-dir:{moved}")):
        assert base.name == f"local-dir:{moved}"
        restored = load_adapter(base, tmp_path / "adapter")
        with torch.no_grad():
            torch.testing.assert_close(restored(x, restored.tokenize(prompts)), adapted, rtol=1e-5, atol=1e-5)
    other = write_folder(tmp_path / "other", model_type, seed=7)
    with pytest.raises(AdapterMismatchError, match="fingerprint"):
        load_adapter(load_backbone(f"local-dir:{other}"), tmp_path / "adapter")
    with pytest.raises(AdapterMismatchError, match="was made for backbone"):
        load_adapter(load_backbone("tiny-clip"), tmp_path / "adapter")


# -- tokenizers ---------------------------------------------------------------------------------------
def test_siglip_folder_without_tokenizer_files(tmp_path, offline):
    import transformers

    # SigLIP's vocabulary size (T5's English SentencePiece): the family's standard tokenizer is that one
    text = {**CASES["siglip"][0], "vocab_size": 32000}
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=CASES["siglip"][1]))
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    spec = get_spec(f"local-dir:{folder}")
    assert spec.tokenizer.kind == "hf-auto" and spec.tokenizer.source == "hf-hub:google/siglip-base-patch16-224"
    with pytest.raises(WeightsNotAvailableError, match="google/siglip-base-patch16-224.*--text-dir"):
        load_backbone(f"local-dir:{folder}")
    assert load_backbone(f"local-dir:{folder}", random_init=True).tokenizer.name == "generated-siglip"
    generated_siglip_tokenizer().save_pretrained(tmp_path / "tok")
    assert load_backbone(f"local-dir:{folder}", text_dir=str(tmp_path / "tok")).tokenize(["a"]).shape == (1, 64)


def test_siglip_folder_with_an_unknown_vocabulary_and_no_tokenizer(tmp_path, offline):
    _hf_model("siglip").save_pretrained(tmp_path / "m")  # 334 tokens: no standard SigLIP tokenizer has that many
    with pytest.raises(WeightsNotAvailableError, match="names no tokenizer.*--text-dir"):
        load_backbone(f"local-dir:{tmp_path / 'm'}")


def test_clip_folder_with_a_small_vocabulary_and_no_tokenizer_is_refused(tmp_path, offline):
    import transformers

    text = {**CASES["clip"][0], "vocab_size": 500}
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=CASES["clip"][1]))
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(MedClipSVDError, match="49408 tokens but the model's text vocabulary has 500"):
        load_backbone(f"local-dir:{tmp_path / 'm'}")


def test_clip_folder_tokenizer_that_pads_with_its_end_token_is_cut_after_the_end_token(tmp_path):
    """Hugging Face CLIP tokenizers pad with <|endoftext|>: the cut uses the attention mask, not the pad id."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad-eot>": 0, "<sot>": 1, "a": 2, "photo": 3, "of": 4, "brain": 5, "[UNK]": 6}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<sot> $A <pad-eot>",
                                                        special_tokens=[("<sot>", 1), ("<pad-eot>", 0)])
    folder = write_folder(tmp_path / "m", "clip")
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad-eot>", eos_token="<pad-eot>",
                            unk_token="[UNK]").save_pretrained(folder)
    spec = get_spec(f"local-dir:{folder}")
    assert spec.tokenizer.kind == "hf-auto" and "tokenizer.json" in spec.tokenizer.files
    tokens = build_tokenizer(spec)(["a photo of a brain", "a brain"])
    assert tokens.tolist() == [[1, 2, 3, 4, 2, 5, 0], [1, 2, 5, 0, 0, 0, 0]]  # the end token is kept


# -- sources and refusals ------------------------------------------------------------------------------
def test_hf_hub_id_reads_config_and_weights_through_the_hub(tmp_path, monkeypatch):
    from medclipsvd.backbones import sources

    folder = write_folder(tmp_path / "repo", "clip", seed=2)
    asked = []
    monkeypatch.setattr(sources, "_hf_download", lambda repo, name, allow_network=True: (
        asked.append(name) or (folder / name if (folder / name).is_file() else None)))
    bb = load_backbone("hf-hub:example-org/tiny-clip-transformers")
    assert bb.family == "hf-clip" and bb.source == "hf-hub:example-org/tiny-clip-transformers"
    assert bb.fingerprint() == load_backbone(f"local-dir:{folder}").fingerprint()
    assert asked[:2] == ["open_clip_config.json", "config.json"] and "model.safetensors" in asked


def test_hf_hub_id_offline_says_what_to_do(offline):
    with pytest.raises(WeightsNotAvailableError, match="config.json.*local-dir:DIR"):
        load_backbone("hf-hub:example-org/never-downloaded-clip")


@pytest.mark.parametrize("config, message", [
    ({"model_type": "blip"}, "model_type 'blip'"),
    ({"model_type": "clip", "architectures": ["CLIPVisionModel"]}, "CLIPVisionModel, not a CLIPModel"),
    ({"model_type": "siglip", "vision_config": {"vision_use_head": False}}, "no pooling head"),
])
def test_other_transformers_models_are_refused(tmp_path, config, message):
    from medclipsvd.backbones.openclip_arch import UnsupportedArchitectureError

    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match=message) as err:
        load_backbone(f"local-dir:{tmp_path}")
    assert "backbones --all" in str(err.value)


# -- the commands ---------------------------------------------------------------------------------------
def cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from medclipsvd.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medclipsvd", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_summary_train_predict_export(folder, tmp_path, monkeypatch, capsys, offline):
    """The acceptance path: summary, train (tiny generated data, 2 steps, no MLflow), predict --adapter, export
    (MONAI bundle, whose own check compares its weights with the merged model; and hf)."""
    from medclipsvd.engine.synthetic import write_synthetic_dataset

    model_type, path = folder
    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "svd"))
    backbone = f"local-dir:{path}"
    code, out, err = cli(["summary", "--backbone", backbone, "--json"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["trainable_params"] == _expected_sigma() and summary["max_abs_logit_diff"] <= 1e-4
    assert summary["family"] == f"hf-{model_type}"

    data = write_synthetic_dataset(tmp_path / "data", patients_per_class=2, images_per_patient=1, size=24)
    run = tmp_path / "run"
    code, out, err = cli(["train", "--pipeline", str(REPO / "pipelines" / "demo.yaml"), "--data-root", str(data),
                          "--backbone", backbone, "--shots", "1", "--max-steps", "2", "--device", "cpu",
                          "--no-mlflow", "--output", str(run)], monkeypatch, capsys)
    assert code == 0, err
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["backbone"]["name"] == backbone
    assert config["backbone"]["fingerprint"] == load_backbone(backbone).fingerprint()
    assert config["trainable_parameters"] == _expected_sigma()

    image = next(p for p in sorted(data.rglob("*")) if p.is_file() and p.suffix in (".dcm", ".png"))
    preds = tmp_path / "preds.csv"
    code, out, err = cli(["predict", "--adapter", str(run / "adapter"), "--device", "cpu", "--output", str(preds),
                          str(image)], monkeypatch, capsys)
    assert code == 0, err
    import pandas as pd

    frame = pd.read_csv(preds)
    probs = frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape == (1, 3) and probs.sum() == pytest.approx(1.0, abs=1e-4)

    code, out, err = cli(["export", "--adapter", str(run / "adapter"), "--output", str(tmp_path / "bundle")],
                         monkeypatch, capsys)
    assert code == 0, err
    spec = json.loads((tmp_path / "bundle" / "models" / "backbone.json").read_text())
    assert spec["family"] == f"hf-{model_type}" and spec["model_cfg"]["hf_config"]["model_type"] == model_type
    code, out, err = cli(["export", "--adapter", str(run / "adapter"), "--format", "hf", "--output",
                          str(tmp_path / "share")], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "share" / "adapter.safetensors").read_bytes() == \
        (run / "adapter" / "adapter.safetensors").read_bytes()


def test_predict_and_export_after_the_model_folder_moved(tmp_path, monkeypatch, capsys, offline):
    """`predict --adapter` / `export` of a run whose model folder has moved: a clear line naming --weights; with
    --weights local-dir:NEW the same probabilities as before the move; another model's folder is refused."""
    import pandas as pd

    from medclipsvd.engine.synthetic import write_synthetic_dataset

    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "svd"))
    path = write_folder(tmp_path / "model", "clip", seed=2)
    data = write_synthetic_dataset(tmp_path / "data", patients_per_class=2, images_per_patient=1, size=24)
    run = tmp_path / "run"
    code, out, err = cli(["train", "--pipeline", str(REPO / "pipelines" / "demo.yaml"), "--data-root", str(data),
                          "--backbone", f"local-dir:{path}", "--shots", "1", "--max-steps", "2", "--device", "cpu",
                          "--no-mlflow", "--output", str(run)], monkeypatch, capsys)
    assert code == 0, err
    image = next(p for p in sorted(data.rglob("*")) if p.is_file() and p.suffix in (".dcm", ".png"))

    def predict(name, *extra):
        csv = tmp_path / f"{name}.csv"
        code, out, err = cli(["predict", "--adapter", str(run / "adapter"), "--device", "cpu", *extra,
                              "--output", str(csv), str(image)], monkeypatch, capsys)
        frame = pd.read_csv(csv) if code == 0 else None
        return code, err, None if frame is None else frame[[c for c in frame if c.startswith("prob_")]].to_numpy()

    code, err, before = predict("before")
    assert code == 0, err
    moved = path.rename(tmp_path / "moved")
    code, err, _ = predict("gone")
    assert code == 2 and err.startswith("error:") and "--weights local-dir:NEW" in err and "Traceback" not in err
    code, err, after = predict("after", "--weights", f"local-dir:{moved}")
    assert code == 0, err
    assert abs(after - before).max() < 1e-5
    code, out, err = cli(["export", "--adapter", str(run / "adapter"), "--weights", f"local-dir:{moved}",
                          "--output", str(tmp_path / "bundle")], monkeypatch, capsys)
    assert code == 0, err
    other = write_folder(tmp_path / "other", "clip", seed=9)
    code, err, _ = predict("other", "--weights", f"local-dir:{other}")
    assert code == 2 and "fingerprint" in err and "Traceback" not in err


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_bundled_backbone_serves_without_the_model_folder(model_type, tmp_path, monkeypatch, offline):
    """`register --bundle-backbone` of a run on a transformers folder stores the whole model folder (config,
    weights, tokenizer files): the served model gives predict's probabilities with the original folder gone, and
    the bundled config and tokenizer files are among the sealed (hashed) files."""
    import numpy as np

    from medclipsvd import api
    from medclipsvd.engine.synthetic import write_synthetic_dataset
    from medclipsvd.serving.predictor import Predictor
    from medclipsvd.serving.trained_run import local_model_config
    from medclipsvd.tracking.model_files import hashed_files
    from medclipsvd.tracking.registry import _bundle

    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "svd"))
    path = write_folder(tmp_path / "model", model_type, seed=4)
    data = write_synthetic_dataset(tmp_path / "data", patients_per_class=2, images_per_patient=1, size=24)
    api.run_pipeline(str(REPO / "pipelines" / "demo.yaml"), data, tmp_path / "run", backbone=f"local-dir:{path}",
                     shots=1, max_steps=2, device="cpu", progress=False, plots=False)
    adapter = tmp_path / "run" / "adapter"
    rng = np.random.default_rng(1)
    images = [rng.random((40, 40, 3)).astype(np.float32) for _ in range(2)]
    before = Predictor.from_adapter(adapter).predict_proba(images)
    config = local_model_config(adapter)
    config_path = tmp_path / "model_config.json"
    config_path.write_text(json.dumps(config))
    artifacts = _bundle(config, tmp_path / "bundle", None, None)
    bundled = Path(artifacts["backbone"])
    assert set(artifacts) == {"backbone"} and (bundled / "config.json").is_file()
    assert (bundled / "tokenizer.json").is_file() == CASES[model_type][2]  # CLIP's BPE ships with open_clip
    for f in path.iterdir():
        f.unlink()
    path.rmdir()
    served = Predictor.from_files(config_path, adapter, bundle=str(bundled))
    np.testing.assert_allclose(served.predict_proba(images), before, atol=1e-5)
    sealed = {p.relative_to(tmp_path).as_posix() for p in hashed_files(
        tmp_path, {"config": "model_config.json", "adapter": "run/adapter", "backbone": "bundle/backbone"})}
    assert "bundle/backbone/config.json" in sealed and not any(n.endswith(".safetensors") and "bundle" in n
                                                                for n in sealed)
    if CASES[model_type][2]:
        assert "bundle/backbone/tokenizer.json" in sealed


def test_bundle_network_reproduces_predict_without_the_model_folder(tmp_path, monkeypatch, offline):
    """The exported bundle builds the transformers architecture from its own backbone.json: it runs with the
    model folder gone, and gives predict's probabilities."""
    import numpy as np

    from medclipsvd import api
    from medclipsvd.engine.synthetic import write_synthetic_dataset
    from medclipsvd.export.monai_bundle import export_monai_bundle
    from medclipsvd.export.runtime import SPEC_FILE, WEIGHTS_FILE, load_network
    from medclipsvd.serving.predictor import Predictor

    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "svd"))
    path = write_folder(tmp_path / "model", "siglip", seed=3)
    data = write_synthetic_dataset(tmp_path / "data", patients_per_class=2, images_per_patient=1, size=24)
    api.run_pipeline(str(REPO / "pipelines" / "demo.yaml"), data, tmp_path / "run", backbone=f"local-dir:{path}",
                     shots=1, max_steps=2, device="cpu", progress=False, plots=False)
    predictor = Predictor.from_adapter(tmp_path / "run" / "adapter")
    bundle = export_monai_bundle(tmp_path / "run" / "adapter", tmp_path / "bundle")
    for f in path.iterdir():
        f.unlink()
    path.rmdir()
    net = load_network(bundle / WEIGHTS_FILE, f"local-dir:{path}", spec=bundle / SPEC_FILE)
    assert float(net.logit_bias) == pytest.approx(float(predictor.backbone.logit_bias))
    rng = np.random.default_rng(0)
    image = rng.random((40, 40, 3)).astype(np.float32)
    x = predictor.transform(image)[None]
    with torch.no_grad():
        bundle_probs = torch.softmax(net(x), dim=-1).numpy()
    np.testing.assert_allclose(bundle_probs, predictor.predict_proba([image]), atol=1e-5)


@pytest.mark.slow
def test_mlflow_logging_registration_and_serving(tmp_path, monkeypatch, capsys, offline):
    """A transformers SiglipModel folder through MLflow: the run is logged, registered, and `predict --model`
    serves the registered version with the probabilities of `predict --adapter`."""
    import pandas as pd

    from medclipsvd.engine.synthetic import write_synthetic_dataset

    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "svd"))
    path = write_folder(tmp_path / "model", "siglip", seed=5)
    data = write_synthetic_dataset(tmp_path / "data", patients_per_class=2, images_per_patient=1, size=24)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = cli(["train", "--pipeline", str(REPO / "pipelines" / "demo.yaml"), "--data-root", str(data),
                          "--backbone", f"local-dir:{path}", "--shots", "1", "--max-steps", "2", "--device", "cpu",
                          "--output", str(tmp_path / "run"), "--tracking-uri", uri, "--no-system-metrics",
                          "--register", "--name", "hf-siglip"], monkeypatch, capsys)
    assert code == 0, err
    assert "registered models:/hf-siglip/1" in out
    image = next(p for p in sorted(data.rglob("*")) if p.is_file() and p.suffix in (".dcm", ".png"))
    frames = []
    for source in (["--model", "models:/hf-siglip/1", "--tracking-uri", uri],
                   ["--adapter", str(tmp_path / "run" / "adapter")]):
        csv = tmp_path / f"preds{len(frames)}.csv"
        code, out, err = cli(["predict", *source, "--device", "cpu", "--output", str(csv), str(image)],
                             monkeypatch, capsys)
        assert code == 0, err
        frames.append(pd.read_csv(csv))
    columns = [c for c in frames[0].columns if c.startswith("prob_")]
    assert columns and abs(frames[0][columns].to_numpy() - frames[1][columns].to_numpy()).max() < 1e-4
