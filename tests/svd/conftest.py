import pytest
import torch

from medclipsvd.backbones import load_backbone



@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 224, 224, generator=gen)


@pytest.fixture(params=["tiny-clip", "tiny-biomedclip"])
def tiny(request):
    return load_backbone(request.param)


@pytest.fixture
def svd_cache(tmp_path):
    return tmp_path / "svd-cache"
