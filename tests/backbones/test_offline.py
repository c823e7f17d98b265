"""Pretrained weights offline without a local copy: fail at once, say which files and how to provide them."""
import time

import pytest
import torch
from safetensors.torch import save_file

from medclipsvd.backbones import get_spec, load_backbone
from medclipsvd.errors import MedClipSVDError, WeightsNotAvailableError


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache


@pytest.mark.parametrize("name, expected", [
    ("clip-vit-b16", "open_clip_model.safetensors"),
    ("biomedclip", "--text-dir"),
])
def test_hub_weights_offline_fail_fast_with_instructions(offline, name, expected):
    start = time.monotonic()
    with pytest.raises(WeightsNotAvailableError) as err:
        load_backbone(name)
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert expected in msg and "local-dir:" in msg and "--random-init" in msg


def test_local_dir_missing_files_names_the_folder_not_its_contents(tmp_path):
    (tmp_path / "README.md").write_text("not weights")
    (tmp_path / "patient-DOE-JANE.txt").write_text("another folder's file")
    with pytest.raises(WeightsNotAvailableError) as err:
        load_backbone("clip-vit-b16", weights=f"local-dir:{tmp_path}")
    msg = str(err.value)
    assert str(tmp_path) in msg and "open_clip_model.safetensors" in msg
    assert "README.md" not in msg and "patient-DOE-JANE" not in msg


def test_local_dir_that_does_not_exist(tmp_path):
    with pytest.raises(WeightsNotAvailableError, match="does not exist"):
        load_backbone("clip-vit-b16", weights=f"local-dir:{tmp_path / 'nope'}")


def test_biomedclip_tokenizer_folder_missing_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsNotAvailableError, match="vocab.txt"):
        load_backbone("biomedclip", random_init=True, text_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-biomedclip"])
def test_local_dir_round_trip_of_weights(tmp_path, name):
    src = load_backbone(name, seed=3)
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()},
              str(tmp_path / "open_clip_model.safetensors"))
    loaded = load_backbone(name, weights=f"local-dir:{tmp_path}")
    assert loaded.fingerprint() == src.fingerprint()
    assert loaded.source == f"local-dir:{tmp_path}"


def test_weights_for_another_architecture_are_refused(tmp_path):
    other = load_backbone("tiny-biomedclip")
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(MedClipSVDError, match="do not fit this architecture"):
        load_backbone("tiny-clip", weights=str(tmp_path / "w.safetensors"))


def test_pickled_objects_are_never_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(WeightsNotAvailableError, match="never\\s+unpickles|not a plain tensor checkpoint"):
        load_backbone("tiny-clip", weights=f"local-dir:{tmp_path}")


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch, tmp_path):
    from medclipsvd.backbones.sources import hub_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1")  # nothing listens on 443 here
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub_reachable.cache_clear()
    start = time.monotonic()
    with pytest.raises(WeightsNotAvailableError, match="hub cannot be reached"):
        load_backbone("clip-vit-b16")
    hub_reachable.cache_clear()
    assert time.monotonic() - start < 10


def test_random_init_biomedclip_never_waits_for_the_hub(monkeypatch, tmp_path):
    from medclipsvd.backbones import tokenizers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    calls = []
    real = tokenizers.resolve_files
    monkeypatch.setattr(tokenizers, "resolve_files",
                        lambda *a, **k: calls.append(k.get("allow_network")) or real(*a, **k))
    tok = tokenizers.build_tokenizer(get_spec("biomedclip"), random_init=True)
    assert calls == [False] and tok.name == "generated-wordpiece"
