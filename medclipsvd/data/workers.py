"""How many DataLoader worker processes to use when the user does not say.

On CUDA a single process decoding and resizing images cannot keep a GPU busy (a σ step of a ViT-B/16 at
batch 32 takes tens of milliseconds on an H100/H200; decoding 32 images on one core takes longer), so
the default there is one worker per available core, leaving one for the training process, capped at 8
(beyond that the few-shot sets are too small to gain). On CPU the workers would compete with the model's
own threads for the same cores, so the default is 0 (load in the main process)."""
from __future__ import annotations

import os

MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    """Cores this process may run on (the affinity mask under Slurm/containers, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def resolve_num_workers(num_workers: int | None, device) -> int:
    """`num_workers` when given (>= 0), else the default for `device` (a torch.device or its string)."""
    if num_workers is not None:
        if num_workers < 0:
            from medclipsvd.errors import MedClipSVDError

            raise MedClipSVDError(f"--num-workers must be 0 or more, got {num_workers}")
        return int(num_workers)
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, available_cores() - 1))
