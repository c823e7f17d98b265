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
    assert workers.resolve_num_workers(4, "cpu") == 4 and workers.resolve_num_workers(0, "cuda") == 0


def test_negative_is_a_clear_error():
    with pytest.raises(MedClipSVDError, match="--num-workers -1: must be 0 or more"):
        workers.resolve_num_workers(-1, "cpu")


def test_explicit_workers_are_bounded_by_cores_and_a_hard_cap(monkeypatch):
    monkeypatch.delenv("MEDCLIPSVD_MAX_WORKERS", raising=False)
    monkeypatch.setattr(workers, "available_cores", lambda: 3)
    assert workers.resolve_num_workers(12, "cuda") == 12  # 4 per core
    with pytest.raises(MedClipSVDError, match=r"--num-workers 13: at most 12 .*3 cores here.*MEDCLIPSVD_MAX_WORKERS"):
        workers.resolve_num_workers(13, "cpu")
    monkeypatch.setattr(workers, "available_cores", lambda: 256)  # a many-core node: the hard cap holds
    assert workers.resolve_num_workers(64, "cuda") == 64
    with pytest.raises(MedClipSVDError, match="at most 64"):
        workers.resolve_num_workers(65, "cuda")
    monkeypatch.setenv("MEDCLIPSVD_MAX_WORKERS", "100")  # the user's own limit replaces both
    assert workers.resolve_num_workers(100, "cuda") == 100
    with pytest.raises(MedClipSVDError, match="set by MEDCLIPSVD_MAX_WORKERS"):
        workers.resolve_num_workers(101, "cuda")
    monkeypatch.setenv("MEDCLIPSVD_MAX_WORKERS", "2")  # and bounds the automatic default too
    assert workers.resolve_num_workers(None, "cuda") == 2
    monkeypatch.setenv("MEDCLIPSVD_MAX_WORKERS", "0")  # no worker processes at all
    assert workers.resolve_num_workers(None, "cuda") == 0 and workers.resolve_num_workers(0, "cuda") == 0
    with pytest.raises(MedClipSVDError, match="--num-workers 1: at most 0"):
        workers.resolve_num_workers(1, "cuda")
    monkeypatch.setenv("MEDCLIPSVD_MAX_WORKERS", "many")
    with pytest.raises(MedClipSVDError, match="MEDCLIPSVD_MAX_WORKERS='many'"):
        workers.resolve_num_workers(1, "cuda")
