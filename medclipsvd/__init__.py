"""medclipsvd: σ-only SVD adaptation of CLIP-style models to biomedical imaging.

The public API is imported lazily so that `medclipsvd --help` does not pay for torch:

    from medclipsvd import load_backbone, load_dataset, few_shot, adapt, train, evaluate, predict
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "load_backbone": "medclipsvd.backbones",
    "list_backbones": "medclipsvd.backbones",
    "Backbone": "medclipsvd.backbones",
    "adapt": "medclipsvd.svd",
    "merge": "medclipsvd.svd",
    "TargetSpec": "medclipsvd.svd",
    "save_adapter": "medclipsvd.svd",
    "load_adapter": "medclipsvd.svd",
    "sigma_parameters": "medclipsvd.svd",
    "load_dataset": "medclipsvd.api",
    "few_shot": "medclipsvd.api",
    "train": "medclipsvd.api",
    "evaluate": "medclipsvd.api",
    "predict": "medclipsvd.api",
    "list_pipelines": "medclipsvd.api",
    "run_pipeline": "medclipsvd.api",
}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'medclipsvd' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))


__all__ = sorted(_API)
