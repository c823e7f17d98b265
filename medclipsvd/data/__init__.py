"""Data layer: dataset registry, readers (images, DICOM, NIfTI, MedMNIST), checks, few-shot sampling,
transforms and a cached torch Dataset. See docs/architecture.md ("Data interfaces") and docs/datasets.md.

Sub-packages, lowest first: ``readers`` (one file -> pixels, through the formats table), ``volumes`` (3-D
series -> 2-D planes, and the ``InputPolicy`` that says how), ``sources`` (a dataset's on-disk layout or a
hospital folder/CSV -> listed entries, confined to the data root); the modules here build datasets on them.

Names are imported on first use (PEP 562), so that `medclipsvd data list` reads the registry without
importing torch, pydicom or nibabel."""
from __future__ import annotations

import importlib

_WHERE = {
    "CheckReport": "checks", "DataCheckError": "checks",
    "ImageDataset": "dataset",
    "base_new_labels": "fewshot", "sample_few_shot": "fewshot", "split_base_new": "fewshot",
    "grouped_stratified_split": "sources.splits",
    "read_split_json": "sources.layouts",
    "load_dataset": "loading", "write_split": "loading",
    "read_image": "readers.dispatch",
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
