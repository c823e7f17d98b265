"""Dataset registry: one YAML file per dataset in ``registry/`` (facts as data, no code per dataset)."""
from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medclipsvd.errors import DataError

Suite = Literal["biomedical", "natural", "imagenet_variants", "extra", "custom"]
LayoutKind = Literal["split_json", "fgvc_txt", "imagenet_folders", "imagenet_numbered", "imagenet_variant",
                     "medmnist_npz", "custom"]
SUITES = ("biomedical", "natural", "imagenet_variants", "extra")


class Layout(BaseModel):
    """Where a dataset's files are, relative to the data root.

    * ``split_json``: ``<root>/<dir>/<split_file>`` listing ``[relpath, label, classname]`` per split, images
      under ``<root>/<dir>/<image_dir>/`` (biomedical benchmarks and CoOp's ``split_zhou_*.json``).
    * ``fgvc_txt``: ``variants.txt`` + ``images_variant_{train,val,test}.txt`` in ``<root>/<dir>/``.
    * ``imagenet_folders``: ``<dir>/<image_dir>/{train,val}/<wnid>/`` + ``<dir>/classnames.txt``.
    * ``imagenet_numbered``: ImageNetV2, folders ``0..999`` = label, names from ``classnames.txt``.
    * ``imagenet_variant``: Sketch / A / R, ``<wnid>/`` folders; labels = sorted order of the folders present.
    * ``medmnist_npz``: ``<root>/<npz_file>`` (or ``<root>/<dir>/<npz_file>``) with ``train_images`` ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: LayoutKind
    dir: str | None = None
    image_dir: str | None = None
    split_file: str | None = None
    classnames_file: str | None = None
    npz_file: str | None = None


class DatasetInfo(BaseModel):
    """Everything known about a dataset before looking at its files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    suite: Suite
    modality: str
    organ: str | None = None
    hflip: bool = True  # False where laterality matters (chest and knee X-ray)
    file_type: str | None = None
    classnames: list[str] | None = None  # label order; None where the names come from the data root
    num_classes: int | None = None
    counts: dict[str, int] = Field(default_factory=dict)  # expected train/val/test sizes where known
    templates: dict[str, str] = Field(default_factory=dict)  # protocol -> template with "{}"
    layouts: list[Layout] = Field(default_factory=list)  # tried in order
    download: str | None = None
    source: str | None = None
    licence: str | None = None
    citation: str | None = None
    splits_from: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetInfo":
        if self.classnames is not None:
            if self.num_classes is None:
                object.__setattr__(self, "num_classes", len(self.classnames))
            elif self.num_classes != len(self.classnames):
                raise ValueError(f"{self.name}: num_classes {self.num_classes} != {len(self.classnames)} names")
        for protocol, tpl in self.templates.items():
            if tpl.count("{}") != 1:
                raise ValueError(f"{self.name}: template for {protocol!r} must contain one '{{}}': {tpl!r}")
        return self

    def template(self, protocol: str = "few_shot") -> str:
        """The prompt template of a protocol, falling back to the few-shot one."""
        tpl = self.templates.get(protocol) or self.templates.get("few_shot")
        if tpl is None:
            raise DataError(f"dataset {self.name} has no prompt template for protocol {protocol!r} "
                            f"(it has: {sorted(self.templates)}); add one to its registry YAML")
        return tpl

    def prompts(self, protocol: str = "few_shot", classnames: list[str] | None = None) -> list[str]:
        """One prompt per class, as the reference builds them (underscores become spaces)."""
        names = classnames if classnames is not None else self.classnames
        if names is None:
            raise DataError(f"dataset {self.name} takes its class names from the data root; "
                            f"pass the loaded DatasetSplits.classnames")
        tpl = self.template(protocol)
        return [tpl.format(c.replace("_", " ")) for c in names]


@functools.cache
def _registry() -> dict[str, DatasetInfo]:
    out: dict[str, DatasetInfo] = {}
    folder = resources.files("medclipsvd.data") / "registry"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml"):
            continue
        from medclipsvd.io.safeload import parse_yaml

        raw = parse_yaml(entry.read_bytes().decode("utf-8"), entry.name)
        try:
            info = DatasetInfo(**raw)
        except Exception as exc:  # a broken registry file is a packaging bug; say which file
            raise DataError(f"registry file {entry.name} is invalid: {exc}") from exc
        out[info.name.lower()] = info
    return out


def list_datasets(suite: str | None = None) -> list[str]:
    """Registered dataset names, sorted case-insensitively.

    ``suite``: ``"biomedical"`` (the 10 CLIP-SVD benchmarks), ``"natural"`` (the 11 CoOp datasets),
    ``"imagenet_variants"`` (V2, Sketch, A, R; test only), ``"extra"`` (DermaMNIST, PneumoniaMNIST) or
    ``None`` for all."""
    if suite is not None and suite not in SUITES:
        raise DataError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)} (or none for all)")
    infos = _registry().values()
    return sorted((i.name for i in infos if suite is None or i.suite == suite), key=str.lower)


def dataset_info(name: str) -> DatasetInfo:
    """Registry entry by name, case-insensitive (``busi``, ``BUSI``, ``covid_19`` ...)."""
    reg = _registry()
    key = name.lower()
    if key not in reg:
        # also accept the on-disk folder names (``oxford_pets``, ``caltech-101``)
        for info in reg.values():
            if any(l.dir and l.dir.lower() == key for l in info.layouts):
                return info
        raise DataError(f"unknown dataset {name!r}. Registered: {', '.join(list_datasets())}. "
                        f"For your own data use name 'custom' with a folder of class folders or a CSV.")
    return reg[key]
