"""How many DataLoader worker processes to use when the user does not say.

On CUDA a single process decoding and resizing images cannot keep a GPU busy (a σ step of a ViT-B/16 at
batch 32 takes tens of milliseconds on an H100/H200; decoding 32 images on one core takes longer), so
the default there is one worker per available core, leaving one for the training process, capped at 8
(beyond that the few-shot sets are too small to gain). On CPU the workers would compete with the model's
own threads for the same cores, so the default is 0 (load in the main process)."""
from __future__ import annotations

import os

MAX_AUTO_WORKERS = 8
# What a user may ask for: each worker is a process with its own copy of the dataset and decoder state, so
# `--num-workers 100000` forks until the OOM killer stops the machine. Beyond a few per core, workers only
# wait for a core; the hard cap holds on many-core nodes too.
WORKERS_PER_CORE = 4
HARD_MAX_WORKERS = 64
MAX_WORKERS_ENV = "MEDCLIPSVD_MAX_WORKERS"


def available_cores() -> int:
    """Cores this process may run on (the affinity mask under Slurm/containers, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def max_num_workers() -> int:
    """The most DataLoader workers one run may start: MEDCLIPSVD_MAX_WORKERS if set, else 4 per available
    core, at most 64."""
    from medclipsvd.data.limits import env_limit

    return int(env_limit(MAX_WORKERS_ENV, min(WORKERS_PER_CORE * available_cores(), HARD_MAX_WORKERS),
                         "number of worker processes", minimum=0))  # 0: every run loads in its main process


def num_workers_problem(num_workers: int) -> str | None:
    """Why ``num_workers`` is refused (the text after ``--num-workers N: ``), or ``None``."""
    if num_workers < 0:
        return "must be 0 or more (0 loads the data in the main process)"
    limit = max_num_workers()
    if num_workers > limit:
        how = (f"set by {MAX_WORKERS_ENV}" if os.environ.get(MAX_WORKERS_ENV, "").strip() else
               f"{WORKERS_PER_CORE} per CPU core, {available_cores()} cores here, at most {HARD_MAX_WORKERS}")
        return (f"at most {limit} DataLoader worker processes ({how}; each is a process of its own, and more "
                f"only exhaust memory); use a number from 0 to {limit}, or raise the limit with "
                f"{MAX_WORKERS_ENV}=N")
    return None


def resolve_num_workers(num_workers: int | None, device) -> int:
    """`num_workers` when given (0 up to ``max_num_workers()``), else the default for `device` (a
    torch.device or its string)."""
    if num_workers is not None:
        problem = num_workers_problem(int(num_workers))
        if problem:
            from medclipsvd.errors import MedClipSVDError

            raise MedClipSVDError(f"--num-workers {num_workers}: {problem}")
        return int(num_workers)
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, available_cores() - 1, max_num_workers()))
