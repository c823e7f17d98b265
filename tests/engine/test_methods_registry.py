"""The methods registry (issue 17): name -> prepare / load / default lr; a new method is one module plus one
row. Trained folders of every method load through one `load_trained` (tests/test_legacy_fixture.py covers
folders saved by 0.1)."""
import sys
import types

import pytest

from medclipsvd.errors import AdapterError
from medclipsvd.methods import registry


def test_rows():
    assert registry.METHODS == ("svd", "zero_shot", "linear_probe", "lora", "full")
    assert registry.TRAINED_METHODS == ("svd", "lora", "full")
    # CLIP-LoRA's published rate and the usual full fine-tuning rate for CLIP; σ uses the pipeline's lr
    assert registry.DEFAULT_LR == {"lora": 2e-4, "full": 1e-5}
    with pytest.raises(AdapterError, match="unknown method 'dora'"):
        registry.get_method("dora")


def test_listing_imports_no_torch():
    import subprocess

    code = ("import sys; from medclipsvd.methods import METHODS; "
            "print(len(METHODS), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["5", "False"], out.stderr


class _Backbone:
    def __init__(self):
        self.calls = []

    def fingerprint(self):
        self.calls.append("fingerprint")
        return "f" * 32


def test_a_new_method_is_one_module_and_one_row(monkeypatch, tmp_path):
    toy = types.ModuleType("medclipsvd.methods.toy")

    def prepare(backbone, hp, lr):
        backbone.calls.append(("prepare", hp.layers, lr))
        return "prepared"

    def load(backbone, adapter_dir, meta):
        backbone.calls.append(("load", meta["method"], meta["layers"]))

    toy.prepare, toy.load = prepare, load
    monkeypatch.setitem(sys.modules, "medclipsvd.methods.toy", toy)
    monkeypatch.setitem(registry.REGISTRY, "toy", registry.Method("toy", "toy", default_lr=0.5))

    bb = _Backbone()
    hp = types.SimpleNamespace(layers="last:2", lr=2e-3)
    assert registry.prepare_method("toy", bb, hp) == "prepared"
    assert bb.calls == ["fingerprint", ("prepare", "last:2", 0.5)]  # base fingerprint before any change
    assert registry.prepare_method("toy", bb, hp, lr=0.1) == "prepared" and bb.calls[-1][2] == 0.1

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"method": "toy", "fingerprint": "ffff", "layers": "all"}')
    assert registry.load_trained(bb, folder) == "toy"
    assert bb.calls[-1] == ("load", "toy", "all")
    (folder / "adapter_config.json").unlink()  # the older record name reaches the same loader
    (folder / registry.METHOD_FILE).write_text('{"method": "toy", "fingerprint": "ffff", "layers": "last:1"}')
    assert registry.load_trained(bb, folder) == "toy"
    assert bb.calls[-1] == ("load", "toy", "last:1")


def test_untrained_methods_freeze_and_unknown_folders_are_refused(tmp_path):
    torch = pytest.importorskip("torch")

    net = torch.nn.Linear(2, 2)
    assert registry.prepare_method("zero_shot", net, types.SimpleNamespace(layers="all", lr=1.0)) is None
    assert not any(p.requires_grad for p in net.parameters())
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / registry.METHOD_FILE).write_text('{"method": "zero_shot", "fingerprint": "ffff"}')
    with pytest.raises(AdapterError, match="unknown method 'zero_shot'"):
        registry.load_trained(_Backbone(), folder)
    (folder / registry.METHOD_FILE).write_text('{"method": "lora"}')
    with pytest.raises(AdapterError, match="missing or of the wrong type"):
        registry.load_trained(_Backbone(), folder)
