"""σ beyond 1000 x their matrix's scale are refused when written and when read (issue 16 item 8)."""
import hashlib
import json

import pytest
import torch

from medclipsvd.backbones import load_backbone
from medclipsvd.errors import AdapterError
from medclipsvd.svd import adapt, initial_sigmas, load_adapter, save_adapter, sigma_parameters
from medclipsvd.svd.adapter_io import SIGMA_LIMIT


def _reseal(folder, change):
    """Change the σ file with safetensors directly and record its new sha256, as a careful forger would."""
    from safetensors.torch import load_file, save_file

    path = folder / "adapter.safetensors"
    t = load_file(str(path))
    change(t)
    save_file(t, str(path), metadata={"format": "medclipsvd.sigma-adapter"})
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.fixture
def adapted(svd_cache):
    return adapt(load_backbone("tiny-clip"), "paper", cache_dir=svd_cache)


def _scale(bb, name: str) -> float:
    return max(float(initial_sigmas(bb)[name].abs().max()), 1.0)


@pytest.mark.parametrize("factor, refused", [(0.5, False), (1.5, True)])
def test_bound_is_relative_to_the_matrix(adapted, tmp_path, svd_cache, factor, refused):
    name = sorted(sigma_parameters(adapted))[0]
    value = factor * SIGMA_LIMIT * _scale(adapted, name)
    folder = save_adapter(adapted, tmp_path / "ok")
    _reseal(folder, lambda t: t[name].__setitem__(0, value))
    fresh = load_backbone("tiny-clip")
    if refused:
        with pytest.raises(AdapterError, match=rf"adapter\.safetensors: tensor {name} holds σ = .*at most 1000 times"):
            load_adapter(fresh, folder, cache_dir=svd_cache)
    else:
        load_adapter(fresh, folder, cache_dir=svd_cache)
        assert float(sigma_parameters(fresh)[name][0]) == pytest.approx(value, rel=1e-6)


def test_sigma_1e30_and_negative_sigma(adapted, tmp_path, svd_cache):
    folder = save_adapter(adapted, tmp_path / "a")
    name = sorted(sigma_parameters(adapted))[1]
    _reseal(folder, lambda t: t[name].__setitem__(0, -0.01))  # a σ crossing zero: valid, accepted
    load_adapter(load_backbone("tiny-clip"), folder, cache_dir=svd_cache)
    _reseal(folder, lambda t: t[name].__setitem__(0, -1e30))
    with pytest.raises(AdapterError, match="σ = 1e\\+30"):
        load_adapter(load_backbone("tiny-clip"), folder, cache_dir=svd_cache)


def test_out_of_range_sigma_is_never_written(adapted, tmp_path):
    with torch.no_grad():
        next(iter(sigma_parameters(adapted).values()))[0] = 1e30
    with pytest.raises(AdapterError, match="refusing to write the adapter.*retrain with a lower --lr"):
        save_adapter(adapted, tmp_path / "huge")
    assert not (tmp_path / "huge" / "adapter.safetensors").exists()
