"""The records the data layer hands to the rest of the package: samples and a dataset's three splits."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # avoid import cycles; these are only annotations
    from medclipsvd.data.checks import CheckReport
    from medclipsvd.data.registry import DatasetInfo

SPLITS = ("train", "val", "test")

# One file can hold many images (MedMNIST npz arrays): the array key travels in the path after this marker.
NPZ_KEY_SEP = "::"


@dataclass(frozen=True)
class Sample:
    """One image: where it is, its label and class name, and (optionally) which patient it belongs to.

    ``index`` selects one image inside a file holding several: a DICOM frame, a NIfTI slice, a row of a
    MedMNIST array. ``None`` means the file's default image (see ``read_image``).

    ``view`` marks a volume sample (DICOM series folder, NIfTI volume, multi-frame DICOM) and says how it
    becomes 2-D: ``"slices|axis|window"``, e.g. ``"middle|axial|lung"``; ``index`` is then the plane along
    the axis (``None``: the middle one). See ``medclipsvd.data.volumes`` (``read``, ``slicing``)."""

    path: str
    label: int
    classname: str
    patient_id: str | None = None
    index: int | None = None
    view: str | None = None

    @property
    def study(self) -> str:
        """What study-level metrics group by: the patient/study id, else the volume or file itself."""
        return self.patient_id if self.patient_id is not None else self.path


@dataclass
class DatasetSplits:
    """A dataset's train/val/test samples with its class list (label order), registry info and check report."""

    name: str
    classnames: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    info: "DatasetInfo"
    report: "CheckReport | None" = None
    # Free-form provenance (split file used, seed of a computed split, few-shot parameters ...).
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def counts(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def class_counts(self, split: str) -> list[int]:
        out = [0] * len(self.classnames)
        for s in self.split(split):
            out[s.label] += 1
        return out

    def replace(self, **changes) -> "DatasetSplits":
        return replace(self, **changes)

    def __repr__(self) -> str:
        c = self.counts()
        return (f"DatasetSplits({self.name!r}, classes={len(self.classnames)}, "
                f"train={c['train']}, val={c['val']}, test={c['test']})")
