"""Default DataLoader workers: from the available cores on CUDA, none on CPU, explicit values kept."""
import pytest
import torch

from medclipsvd.data import workers
from medclipsvd.errors import MedClipSVDError


def test_defaults_by_device(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 16)
    assert workers.resolve_num_workers(None, "cuda") == 8          # capped
    assert workers.resolve_num_workers(None, torch.device("cuda", 1)) == 8
    monkeypatch.setattr(workers, "available_cores", lambda: 4)
    assert workers.resolve_num_workers(None, "cuda:0") == 3        # one core left for the training process
    monkeypatch.setattr(workers, "available_cores", lambda: 1)
    assert workers.resolve_num_workers(None, "cuda") == 0
    assert workers.resolve_num_workers(None, torch.device("cpu")) == 0
    assert workers.resolve_num_workers(5, "cpu") == 5 and workers.resolve_num_workers(0, "cuda") == 0


def test_negative_is_a_clear_error():
    with pytest.raises(MedClipSVDError, match="--num-workers must be 0 or more"):
        workers.resolve_num_workers(-1, "cpu")
