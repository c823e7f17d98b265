import json

import pytest
import torch

from medclipsvd.backbones import load_backbone
from medclipsvd.errors import AdapterError, AdapterMismatchError
from medclipsvd.svd import adapt, load_adapter, read_adapter_config, save_adapter, sigma_parameters, TargetSpec

PROMPTS = ["a photo of a benign tumor.", "a photo of a malignant tumor.", "a photo of a normal scan."]


def _trained(name, svd_cache, targets="paper"):
    bb = load_backbone(name)
    adapt(bb, targets, cache_dir=svd_cache)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in sigma_parameters(bb).values():
            p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    return bb


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-biomedclip"])
@pytest.mark.parametrize("targets", ["paper", TargetSpec(towers="vision", layers="top", matrices=("q", "v"))])
def test_round_trip_restores_sigma_and_outputs(tmp_path, svd_cache, batch, name, targets):
    bb = _trained(name, svd_cache, targets)
    folder = save_adapter(bb, tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "adapter_config.json"]

    fresh = load_adapter(load_backbone(name), folder, cache_dir=svd_cache)
    for (n1, a), (n2, b) in zip(sigma_parameters(bb).items(), sigma_parameters(fresh).items()):
        assert n1 == n2 and torch.equal(a, b)
    with torch.no_grad():
        torch.testing.assert_close(fresh(batch, fresh.tokenize(PROMPTS)), bb(batch, bb.tokenize(PROMPTS)))


def test_adapter_config_names_the_base(tmp_path, svd_cache):
    bb = _trained("tiny-clip", svd_cache)
    config = read_adapter_config(save_adapter(bb, tmp_path / "a"))
    assert config["backbone"] == {"name": "tiny-clip", "source": "random-init:seed=0", "fingerprint": bb.fingerprint()}
    assert config["preset"] == "paper" and config["trainable_parameters"] == 4608
    assert len(config["target_names"]) == 72 and config["targets"]["layers"] == "all"


@pytest.mark.parametrize("other", [
    lambda: load_backbone("tiny-clip", seed=1),   # same architecture, other weights
    lambda: load_backbone("tiny-biomedclip"),     # another backbone
])
def test_adapter_for_another_base_is_refused(tmp_path, svd_cache, other):
    folder = save_adapter(_trained("tiny-clip", svd_cache), tmp_path / "a")
    with pytest.raises(AdapterMismatchError, match="was made for backbone 'tiny-clip'.*Load the base it was made from"):
        load_adapter(other(), folder, cache_dir=svd_cache)


def test_damaged_or_missing_files_give_clear_errors(tmp_path, svd_cache):
    folder = save_adapter(_trained("tiny-clip", svd_cache), tmp_path / "a")
    (folder / "adapter.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterError, match="sha256 differs"):  # the config records the tensors' hash
        load_adapter(load_backbone("tiny-clip"), folder, cache_dir=svd_cache)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    del cfg["weights_sha256"]  # adapters saved before hashes were recorded: the file itself is checked
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="cannot be read"):
        load_adapter(load_backbone("tiny-clip"), folder, cache_dir=svd_cache)
    with pytest.raises(AdapterError, match="adapter_config.json is missing"):
        load_adapter(load_backbone("tiny-clip"), tmp_path, cache_dir=svd_cache)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["format"] = "something-else"
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="not a medclipsvd"):
        load_adapter(load_backbone("tiny-clip"), folder, cache_dir=svd_cache)


def test_altered_but_valid_adapter_file_is_refused_by_its_recorded_digest(tmp_path, svd_cache):
    """One σ changed and the file re-saved with safetensors: a well-formed file whose bytes differ from the
    save that adapter_config.json records (weights_sha256) must not load."""
    import hashlib

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = save_adapter(_trained("tiny-clip", svd_cache), tmp_path / "a")
    weights = folder / "adapter.safetensors"
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()  # digest kept outside the file
    with safe_open(str(weights), "pt") as fh:
        metadata = fh.metadata()
    sigmas = load_file(str(weights))
    name = sorted(sigmas)[5]
    sigmas[name][0] *= 1.5
    save_file(sigmas, str(weights), metadata=metadata)
    assert torch.equal(load_file(str(weights))[name], sigmas[name])  # a valid safetensors file, just altered
    with pytest.raises(AdapterError, match=r"adapter\.safetensors does not match its adapter_config\.json "
                                           r"\(sha256 differs\)"):
        load_adapter(load_backbone("tiny-clip"), folder, cache_dir=svd_cache)


def test_saving_an_unadapted_backbone_is_refused(tmp_path):
    with pytest.raises(AdapterError, match="not adapted"):
        save_adapter(load_backbone("tiny-clip"), tmp_path / "a")


@pytest.mark.slow
def test_paper_adapter_for_clip_vit_b16_is_under_half_a_megabyte(tmp_path):
    bb = load_backbone("clip-vit-b16", random_init=True)
    adapt(bb, "paper")
    folder = save_adapter(bb, tmp_path / "a")
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 0.5 * 1024 * 1024, size
