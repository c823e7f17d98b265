"""One adapter folder format (issue 17 item 4): every trained method writes adapter_config.json with a
"method" key; folders in the older formats (LoRA / full method.json, σ adapter_config.json without the key)
still load and give the same logits, and the checks on the tensors stay as strict."""
from __future__ import annotations

import json
import types

import pytest

torch = pytest.importorskip("torch")

from medclipsvd.errors import AdapterError  # noqa: E402
from medclipsvd.methods.registry import load_merged, prepare_method  # noqa: E402

HP = types.SimpleNamespace(layers="all", lr=1e-3)


def _backbone():
    from medclipsvd.backbones import load_backbone

    return load_backbone("tiny-clip")  # seeded random weights: the same base every call


def _logits(bb) -> torch.Tensor:
    bb.eval()
    x = torch.linspace(-1, 1, 3 * bb.image_size ** 2).reshape(1, 3, bb.image_size, bb.image_size)
    with torch.no_grad():
        return bb(x, bb.tokenize(["a photo of a cat.", "a photo of a dog."]))


def _trained(method: str, folder):
    """Save an adapter of `method` with parameters moved off their start, and the logits of that model
    merged in memory (the expectation, computed without reading the folder)."""
    bb = _backbone()
    prepared = prepare_method(method, bb, HP)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in prepared.params.values():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    prepared.save(folder)
    prepared.merge()
    return _logits(bb)


@pytest.mark.parametrize("method", ["svd", "lora", "full"])
def test_every_method_writes_adapter_config_with_its_key_and_loads_from_it(method, tmp_path):
    expected = _trained(method, tmp_path / "a")
    assert not (tmp_path / "a" / "method.json").exists()
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["method"] == method
    bb = _backbone()
    assert load_merged(bb, tmp_path / "a") == method
    torch.testing.assert_close(_logits(bb), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_old_method_json_folders_still_load(method, tmp_path):
    """The LoRA / full format up to 0.2: method.json (no format keys) + weights.safetensors."""
    folder = tmp_path / "a"
    expected = _trained(method, folder)
    record = json.loads((folder / "adapter_config.json").read_text())
    for key in ("format", "format_version"):
        record.pop(key)
    (folder / "adapter_config.json").unlink()
    (folder / "method.json").write_text(json.dumps(record))
    bb = _backbone()
    assert load_merged(bb, folder) == method
    torch.testing.assert_close(_logits(bb), expected, rtol=1e-4, atol=1e-5)
    # the digest is still checked in the old format
    blob = bytearray((folder / "weights.safetensors").read_bytes())
    blob[-1] ^= 1
    (folder / "weights.safetensors").write_bytes(bytes(blob))
    with pytest.raises(AdapterError, match=r"does not match its method\.json"):
        load_merged(_backbone(), folder)


def test_old_sigma_config_without_method_key_still_loads(tmp_path):
    folder = tmp_path / "a"
    expected = _trained("svd", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    del config["method"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    bb = _backbone()
    assert load_merged(bb, folder) == "svd"
    torch.testing.assert_close(_logits(bb), expected, rtol=1e-4, atol=1e-5)


def test_checks_stay_strict_in_the_one_format(tmp_path):
    folder = tmp_path / "a"
    _trained("lora", folder)
    good = (folder / "adapter_config.json").read_text()

    def edited(**changes):
        record = json.loads(good)
        record.update(changes)
        (folder / "adapter_config.json").write_text(json.dumps(record))

    edited(format="something-else")
    with pytest.raises(AdapterError, match="is not a medclipsvd lora adapter"):
        load_merged(_backbone(), folder)
    edited(format_version=99)
    with pytest.raises(AdapterError, match="newer than this medclipsvd"):
        load_merged(_backbone(), folder)
    edited(method="zero_shot")
    with pytest.raises(AdapterError, match="unknown method 'zero_shot'"):
        load_merged(_backbone(), folder)
    edited(fingerprint=7)
    with pytest.raises(AdapterError, match="missing or of the wrong type"):
        load_merged(_backbone(), folder)
    edited(weights_sha256="0" * 64)
    with pytest.raises(AdapterError, match=r"does not match its adapter_config\.json"):
        load_merged(_backbone(), folder)
    (folder / "adapter_config.json").write_text(good)
    from medclipsvd.svd import read_adapter_config

    with pytest.raises(AdapterError, match="holds a 'lora' adapter, not a σ-adapter"):
        read_adapter_config(folder)  # the σ reader never takes another method's record


def test_a_sigma_config_edited_to_another_method_is_refused(tmp_path):
    folder = tmp_path / "a"
    _trained("svd", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["method"] = "lora"  # a σ record has no top-level fingerprint: the LoRA reader refuses it
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="missing or of the wrong type"):
        load_merged(_backbone(), folder)


def test_a_method_json_beside_a_sigma_config_is_still_the_record_read(tmp_path):
    """As before the one format: a method.json dropped into a σ folder is read (and refused), never ignored."""
    folder = tmp_path / "a"
    _trained("svd", folder)
    (folder / "method.json").write_text(json.dumps({"method": "os.system", "fingerprint": "f" * 32}))
    with pytest.raises(AdapterError, match=r"method\.json: unknown method 'os\.system'"):
        load_merged(_backbone(), folder)
    (folder / "method.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(AdapterError, match=r"method\.json cannot be read"):
        load_merged(_backbone(), folder)
