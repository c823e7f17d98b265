"""Which datasets each protocol runs on, per suite (reference doc sections 4 and 5)."""
from __future__ import annotations

from medclipsvd.errors import MedClipSVDError

BIOMEDICAL = ["BTMRI", "BUSI", "CHMNIST", "COVID_19", "CTKidney", "KneeXray", "Kvasir", "LungColon",
              "OCTMNIST", "RETINA"]
NATURAL = ["ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101", "FGVCAircraft",
           "SUN397", "DTD", "EuroSAT", "UCF101"]
# BUSI has no base-to-novel configuration in the reference (9 biomedical datasets there).
BIOMEDICAL_BASE2NEW = [d for d in BIOMEDICAL if d != "BUSI"]
CROSS_DATASET_SOURCE = "ImageNet"
# The reference's script omits EuroSAT although its config exists (parity mode follows the script);
# the CoCoOp/paper tables have 10 targets (improved mode).
CROSS_DATASET_TARGETS = [d for d in NATURAL if d != "ImageNet"]
CROSS_DATASET_TARGETS_REFERENCE = [d for d in CROSS_DATASET_TARGETS if d != "EuroSAT"]
DG_TARGETS = ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]


def _canonical(name: str) -> str:
    for d in BIOMEDICAL + NATURAL + DG_TARGETS:
        if d.lower() == name.lower():
            return d
    return name


def suite_datasets(suite: str, protocol: str) -> list[str]:
    """Training datasets of a protocol: `biomedical`, `natural`, or comma-separated dataset names."""
    if protocol in ("cross_dataset", "domain_generalization"):
        if suite not in ("natural",) and _canonical(suite) != CROSS_DATASET_SOURCE:
            raise MedClipSVDError(f"the {protocol} protocol trains on ImageNet (natural suite); "
                                  f"use --suite natural, not {suite!r}")
        return [CROSS_DATASET_SOURCE]
    if suite == "biomedical":
        return BIOMEDICAL_BASE2NEW if protocol == "base2new" else list(BIOMEDICAL)
    if suite == "natural":
        return list(NATURAL)
    names = [_canonical(s.strip()) for s in suite.split(",") if s.strip()]
    if not names:
        raise MedClipSVDError("--suite is empty; use biomedical, natural or dataset names (BUSI,CTKidney)")
    return names


def protocol_targets(protocol: str, mode: str = "improved") -> list[str]:
    if protocol == "cross_dataset":
        from medclipsvd.engine.modes import mode_settings

        eurosat = mode_settings(mode).cross_dataset_eurosat
        return list(CROSS_DATASET_TARGETS if eurosat else CROSS_DATASET_TARGETS_REFERENCE)
    if protocol == "domain_generalization":
        return list(DG_TARGETS)
    return []
