"""Where a command computes (``--device``) and in which precision (``--precision``): the one place that decides.

``--precision`` is the autocast dtype of the forward passes -- the training forward and loss, the evaluation
text and image features, ``predict`` and ``interpret`` -- with the same meaning in every command:

* ``auto``: bf16 on CUDA GPUs that support it and on CPUs that multiply bf16 natively (x86 AVX512-BF16 or AMX,
  the Arm BF16 extension), fp32 elsewhere. In parity mode, auto on CUDA keeps the reference's choice per phase
  (fp16 training and text features, fp32 image features); on a CPU the reference's fp16 becomes the CPU's own
  auto choice, so fp16 is never run, nor recorded, on a CPU.
* ``fp32`` / ``bf16`` / ``fp16``: every phase in that dtype, or refused with an error before any work, never
  swapped for another: bf16 on a CPU without native bf16 (it runs emulated, several times slower than fp32),
  bf16 on a GPU without it, fp16 anywhere but CUDA.

Trained tensors (σ, LoRA factors) stay float32 master weights with float32 AdamW state under any precision:
autocast lowers the inputs of the matmuls, never the parameters. No GradScaler (the reference has none).
What ran is recorded (`PrecisionPlan.record`), never what was asked for.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass

from medclipsvd.errors import MedClipSVDError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = ("auto (bf16 on CUDA and on CPUs with native bf16 - AVX512-BF16/AMX - else fp32; parity mode "
                  "keeps the reference's fp16 on CUDA), fp32, bf16 or fp16 (CUDA only). An explicit choice that "
                  "this machine cannot run natively is refused, not swapped.")
PRECISION_CHOICES = "use auto, fp32, bf16 or fp16 (fp16 on CUDA only)"
_NATIVE_CPU_BF16 = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16")  # x86 and Arm names (torch.cpu / cpuinfo)


class PrecisionError(MedClipSVDError, ValueError):
    """--precision names no precision, or one this machine cannot run natively."""


def resolve_device(device: str = "auto"):
    """auto: CUDA if available, else CPU; otherwise the named device, refused when it is not there."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise MedClipSVDError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):  # meta, xla, ...: tensors there hold no values to train or score
        raise MedClipSVDError(f"--device {device}: medclipsvd runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedClipSVDError(f"--device {device} was asked for but CUDA is not available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise MedClipSVDError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); pick one of them or --device auto")
    return dev


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise PrecisionError(f"--precision {precision!r}: {PRECISION_CHOICES}")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Instruction-set features of this CPU: torch's cpuinfo (torch >= 2.8), else /proc/cpuinfo."""
    import torch

    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        return frozenset(k for k, v in caps().items() if v is True)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.split(":")[0].strip() in ("flags", "Features")]
    except OSError:
        return frozenset()
    return frozenset(w for ln in lines[:1] for w in ln.split(":", 1)[1].split())


def cpu_native_bf16() -> bool:
    """True where the CPU has bf16 dot-product instructions; detected from its feature flags, not by timing
    (oneDNN also "supports" bf16 on plain AVX512 and AVX2 CPUs, by conversion, slower than fp32)."""
    return any(f in cpu_flags() for f in _NATIVE_CPU_BF16)


def _cuda_bf16(device) -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def auto_precision(device) -> str:
    """What `auto` runs on `device` (one phase, no mode)."""
    dev = _as_device(device)
    if dev.type == "cuda":
        return "bf16" if _cuda_bf16(dev) else "fp32"
    if dev.type == "cpu":
        return "bf16" if cpu_native_bf16() else "fp32"
    return "fp32"


@dataclass(frozen=True)
class PrecisionPlan:
    """The autocast dtype of each phase (fp32, bf16 or fp16), decided once per command."""

    asked: str
    device: str          # the device type: cpu, cuda
    train: str
    eval_text: str
    eval_image: str

    def record(self) -> dict:
        """For results.json: what asked for, and what ran."""
        return asdict(self)

    def mode_fields(self) -> dict:
        """The mode's precision switches as they ran (results.json "mode_settings")."""
        return {"train_amp": self.train, "eval_text_amp": self.eval_text, "eval_image_amp": self.eval_image}


def precision_plan(precision: str, device, mode=None) -> PrecisionPlan:
    """The plan for `precision` on `device`. `mode` (engine.modes.ModeSettings, optional) gives the per-phase
    choice of `auto` on CUDA (parity: the reference's fp16/fp16/fp32); without one, every phase is alike.
    Raises PrecisionError, before any work, for a precision this machine cannot run natively."""
    check_precision(precision)
    dev = _as_device(device)
    if precision == "auto":
        wishes = (mode.train_amp, mode.eval_text_amp, mode.eval_image_amp) if mode is not None else ("bf16",) * 3
        low = auto_precision(dev)
        if dev.type == "cuda":
            phases = tuple(w if w == "fp16" else ("fp32" if w == "fp32" else low) for w in wishes)
        else:  # fp16 is the reference's CUDA choice: a CPU runs its own auto choice there
            phases = tuple("fp32" if w == "fp32" else low for w in wishes)
    else:
        _check_runs(precision, dev)
        phases = (precision,) * 3
    return PrecisionPlan(precision, dev.type, *phases)


def _check_runs(precision: str, dev) -> None:
    if precision == "fp32":
        return
    if dev.type == "cpu":
        if precision == "fp16":
            raise PrecisionError("--precision fp16 runs on CUDA only; on a CPU use --precision auto (bf16 where "
                                 "the CPU has it natively, else fp32), bf16 or fp32")
        if not cpu_native_bf16():
            raise PrecisionError("--precision bf16: this CPU has no native bf16 (no AVX512-BF16 or AMX), so bf16 "
                                 "would run emulated, several times slower than fp32; use --precision auto or fp32")
        return
    if dev.type == "cuda":
        if precision == "bf16" and not _cuda_bf16(dev):
            raise PrecisionError("--precision bf16: this GPU has no bf16 support; use --precision fp16 or fp32")
        return
    raise PrecisionError(f"--precision {precision} runs on cpu and cuda only; on {dev.type} use --precision fp32")


def autocast(device, precision: str):
    """The autocast context of a precision that `precision_plan` chose ("auto": `auto_precision`)."""
    import torch

    dev = _as_device(device)
    if precision == "auto":
        precision = auto_precision(dev)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and dev.type != "cuda":
        _check_runs(precision, dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[check_precision(precision)]
    return torch.autocast(dev.type, dtype=dtype)


def _as_device(device):
    import torch

    return device if isinstance(device, torch.device) else torch.device(device)
