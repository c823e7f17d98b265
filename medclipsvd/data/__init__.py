"""Data layer: dataset registry, readers (images, DICOM, NIfTI, MedMNIST), checks, few-shot sampling,
transforms and a cached torch Dataset. See docs/architecture.md ("Data interfaces") and docs/datasets.md.

Names are imported on first use (PEP 562), so that `medclipsvd data list` reads the registry without
importing torch, pydicom or nibabel."""
from __future__ import annotations

import importlib

_WHERE = {
    "CheckReport": "checks", "DataCheckError": "checks",
    "ImageDataset": "dataset",
    "base_new_labels": "fewshot", "sample_few_shot": "fewshot", "split_base_new": "fewshot",
    "grouped_stratified_split": "hospital",
    "read_split_json": "layouts",
    "load_dataset": "loading", "write_split": "loading",
    "read_image": "readers",
    "DatasetInfo": "registry", "dataset_info": "registry", "list_datasets": "registry",
    "CLIP_MEAN": "transforms", "CLIP_STD": "transforms", "build_transform": "transforms",
    "DatasetSplits": "types", "Sample": "types",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"medclipsvd.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'medclipsvd.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_WHERE))


__all__ = sorted(_WHERE)
