"""σ-only SVD adaptation (ours) as a method: the adapted modules of `medclipsvd.svd`; the adapter folder is
adapter_config.json + the σ tensors (`medclipsvd.svd.adapter_io`)."""
from __future__ import annotations

from pathlib import Path

from medclipsvd.methods.prepared import Prepared


def _svd_spec(layers: str):
    from medclipsvd.svd import TargetSpec

    return "paper" if layers == "all" else TargetSpec(layers=layers)


def prepare_svd(backbone, layers: str = "all", lr: float = 2e-3) -> Prepared:
    from medclipsvd.svd import adapt, adapted_modules, merge, save_adapter, sigma_parameters

    adapt(backbone, _svd_spec(layers))
    sig = sigma_parameters(backbone)
    text = any(info.tower == "text" for info in adapted_modules(backbone).values())

    def save(directory: Path) -> Path:
        save_adapter(backbone, str(directory))
        return Path(directory)

    return Prepared("svd", dict(sig), text, lr, save, lambda: merge(backbone), {"layers": layers})


def prepare(backbone, hp, lr: float) -> Prepared:
    return prepare_svd(backbone, hp.layers, lr)


def load(backbone, adapter_dir: Path, meta: dict | None = None) -> None:
    """σ from an adapter folder onto `backbone` (AdapterMismatchError for other base weights)."""
    from medclipsvd.svd import load_adapter

    load_adapter(backbone, str(adapter_dir))
