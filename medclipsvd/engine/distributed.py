"""torchrun support: one training run over several processes (DDP; σ gradients all-reduced, rank 0 logs
and saves). Every rank computes the same global batch plan and takes its own contiguous share."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        return DistInfo(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun set up (NCCL with CUDA, gloo on CPU); no-op otherwise."""
    import torch
    import torch.distributed as tdist

    if not launched_by_torchrun() or tdist.is_initialized():
        return dist_info()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    tdist.init_process_group("nccl" if use_cuda else "gloo")
    return dist_info()


def shutdown_distributed() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
