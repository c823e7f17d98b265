"""Safety: adapters hold finite float σ only; damaged adapter_config.json gives one clear error (issue 10, item 4)."""
import json

import pytest
import torch

from medclipsvd.backbones import load_backbone
from medclipsvd.errors import AdapterError
from medclipsvd.svd import adapt, load_adapter, save_adapter, sigma_parameters


@pytest.fixture
def saved(tmp_path, svd_cache):
    bb = adapt(load_backbone("tiny-clip"), "paper", cache_dir=svd_cache)
    return save_adapter(bb, tmp_path / "adapter")


def _rewrite_sigmas(folder, change):
    from safetensors.torch import load_file, save_file

    path = folder / "adapter.safetensors"
    t = load_file(str(path))
    change(t)
    save_file(t, str(path))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.pop("weights_sha256", None)  # as an adapter written by an older version, or by hand
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("change, message", [
    (lambda t: t[sorted(t)[0]].__setitem__(0, float("nan")), "non-finite|NaN"),
    (lambda t: t[sorted(t)[3]].__setitem__(1, float("inf")), "non-finite|NaN"),
    (lambda t: t.update({k: v.round().to(torch.int32) for k, v in t.items()}), "int32"),
])
def test_non_finite_or_integer_sigma_is_refused_on_load(saved, svd_cache, change, message):
    _rewrite_sigmas(saved, change)
    with pytest.raises(AdapterError, match=message):
        load_adapter(load_backbone("tiny-clip"), saved, cache_dir=svd_cache)


def test_non_finite_sigma_is_never_written(tmp_path, svd_cache):
    bb = adapt(load_backbone("tiny-clip"), "paper", cache_dir=svd_cache)
    with torch.no_grad():
        next(iter(sigma_parameters(bb).values()))[0] = float("nan")
    with pytest.raises(AdapterError, match="refusing to write"):
        save_adapter(bb, tmp_path / "nan-adapter")
    assert not (tmp_path / "nan-adapter").exists() or not any((tmp_path / "nan-adapter").iterdir())


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.pop("backbone"), "backbone"),
    (lambda c: c["backbone"].pop("fingerprint"), "backbone.fingerprint"),
    (lambda c: c.update(format_version="one"), "format_version"),
    (lambda c: c.update(targets=["q", "v"]), "targets"),
    (lambda c: c.update(targets={"layers": 3.5, "towers": "nose"}), "targets"),
    (lambda c: c["backbone"].update(name=["x"]), "backbone.name"),
])
def test_malformed_adapter_config_is_one_clear_error(saved, svd_cache, edit, field):
    path = saved / "adapter_config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg))
    with pytest.raises(AdapterError) as info:
        load_adapter(load_backbone("tiny-clip"), saved, cache_dir=svd_cache)
    msg = str(info.value)
    assert "\n" not in msg and f"'{field}'" in msg and str(path) in msg, msg


def test_non_object_adapter_config(saved, svd_cache):
    (saved / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(AdapterError, match="not a medclipsvd"):
        load_adapter(load_backbone("tiny-clip"), saved, cache_dir=svd_cache)
