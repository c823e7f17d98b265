"""Data layer: dataset registry, readers (images, DICOM, NIfTI, MedMNIST), checks, few-shot sampling,
transforms and a cached torch Dataset. See docs/architecture.md ("Data interfaces") and docs/datasets.md."""
from medclipsvd.data.checks import CheckReport, DataCheckError
from medclipsvd.data.dataset import ImageDataset
from medclipsvd.data.fewshot import base_new_labels, sample_few_shot, split_base_new
from medclipsvd.data.hospital import grouped_stratified_split
from medclipsvd.data.layouts import read_split_json
from medclipsvd.data.loading import load_dataset, write_split
from medclipsvd.data.readers import read_image
from medclipsvd.data.registry import DatasetInfo, dataset_info, list_datasets
from medclipsvd.data.transforms import CLIP_MEAN, CLIP_STD, build_transform
from medclipsvd.data.types import DatasetSplits, Sample

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "CheckReport", "DataCheckError", "DatasetInfo", "DatasetSplits", "ImageDataset", "Sample",
    "base_new_labels", "build_transform", "dataset_info", "grouped_stratified_split", "list_datasets",
    "load_dataset", "read_image", "read_split_json", "sample_few_shot", "split_base_new", "write_split",
]
