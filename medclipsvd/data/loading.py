"""``load_dataset``: registry entry or custom data -> checked ``DatasetSplits``."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from medclipsvd.data import sanity
from medclipsvd.data.sources.confine import RootGuard
from medclipsvd.data.checks import VERIFY_LEVELS, CheckReport, ClassCount, DataCheckError, Problem, run_checks
from medclipsvd.data.sources.custom import list_custom
from medclipsvd.data.sources.splits import DEFAULT_FRACTIONS
from medclipsvd.data.sources.layouts import list_layout
from medclipsvd.data.registry import DatasetInfo, dataset_info
from medclipsvd.data.types import SPLITS, DatasetSplits, Sample
from medclipsvd.errors import DataError


def custom_info(root: Path, *, modality: str = "unknown", hflip: bool = True, classnames=None) -> DatasetInfo:
    name = root.stem if root.is_file() else root.name
    return DatasetInfo(name=name or "custom", suite="custom", modality=modality, hflip=hflip,
                       classnames=classnames, templates={"few_shot": "a photo of a {}.", "base2new": "a photo of a {}."})


def load_dataset(name: str, root: str | os.PathLike, *, allow_missing: bool = False, verify: str = "header",
                 split_file: str | os.PathLike | None = None, seed: int = 0, fractions=DEFAULT_FRACTIONS,
                 slices: str = "middle", window: str | None = None, axis: str = "axial",
                 dicom_frames: str = "middle", nifti_slices: str | None = None, modality: str | None = None,
                 hflip: bool | None = None, progress: bool = False,
                 follow_symlinks: bool = False, series=None, on_bad_series: str | None = None) -> DatasetSplits:
    """Load a dataset's train/val/test samples and check them against the files under ``root``.

    ``name``: a registry name (case-insensitive) or ``"custom"`` (``root`` = a folder of class folders,
    optionally under train/val/test, or a CSV ``path,label[,patient_id][,split]``).
    ``root``: for registry datasets the folder holding the dataset's folder (e.g. ``data/`` with
    ``data/BUSI/``), or that folder itself; for MedMNIST the folder holding the ``.npz``.
    ``verify``: ``exists`` (stat only), ``header`` (default; parse headers), ``decode`` (decode every image).
    ``split_file``: use this split file instead of the registry's; for custom data, read it if it exists,
    else compute the split (``seed``, ``fractions``, patient-grouped) and write it there.
    ``slices`` / ``axis`` / ``window`` / ``dicom_frames``: how volumes (DICOM series, NIfTI, multi-frame)
    become 2-D samples (``InputPolicy``; custom data only, benchmark datasets read 2-D files as always).
    ``nifti_slices``: the older name of ``slices`` (middle | all).
    ``series``: which DICOM series become samples (custom data): a ``SeriesFilter``, a mapping such as
    ``{"modality": "CT", "per_study": "thinnest"}`` or ``["modality=CT", ...]`` (docs/hospital-data.md);
    non-image objects (RTSTRUCT, SEG, SR, ...) never do, localizers / secondary captures / derived series
    only when ``include`` names them. ``on_bad_series``: ``error`` (default; the load fails after listing
    every series that cannot be read) or ``skip`` (they are left out and listed in ``.report.series``).
    ``modality``: the dataset's modality; for custom data ``CT`` or ``MR`` also overrides, for NIfTI volumes
    (no Modality tag), the guess from the minimum value (CT below -500 HU).

    ``follow_symlinks``: every listed path must stay under the data root (for a CSV: its folder); symlinks
    leading outside it are refused unless this is True (``--follow-symlinks``).

    Raises ``DataError`` with the per-split, per-class report when entries are missing or unreadable
    (unless ``allow_missing``: they are dropped and counted in ``.report``) or mislabelled (always)."""
    if verify not in VERIFY_LEVELS:
        raise DataError(f"verify must be one of {VERIFY_LEVELS}, not {verify!r}")
    root = Path(root).expanduser().absolute()  # sample paths stay valid if the working directory changes
    sf = os.fspath(split_file) if split_file is not None else None
    guard = RootGuard.for_root(root, follow_symlinks)
    if name.lower() == "custom":
        from medclipsvd.data.volumes.policy import InputPolicy

        from medclipsvd.data.volumes.windows import MODALITIES

        # CT / MR also says what the NIfTI volumes are (overriding the guess from their values)
        opts = InputPolicy(slices=nifti_slices or slices, window=window, axis=axis, dicom_frames=dicom_frames,
                           modality=str(modality).upper() if str(modality).upper() in MODALITIES else None)
        from medclipsvd.data.volumes.selection import SeriesFilter

        flt = SeriesFilter.parse(series)
        if on_bad_series is not None:
            flt = SeriesFilter.parse({**flt.to_dict(), "on_bad_series": on_bad_series})
        listing = list_custom(root, seed=seed, fractions=fractions, split_file=sf, opts=opts,
                              guard=guard, flt=flt)
        info = custom_info(root, modality=modality or "unknown", hflip=True if hflip is None else hflip,
                           classnames=listing.classnames)
    else:
        info = dataset_info(name)
        if modality is not None or hflip is not None:
            info = info.model_copy(update={k: v for k, v in (("modality", modality), ("hflip", hflip)) if v is not None})
        if not root.exists():
            raise DataError(f"{info.name}: data root {root} does not exist. Pass the folder that holds "
                            f"{info.layouts[0].dir or info.name}/ (see docs/datasets.md).")
        listing = list_layout(info, root, sf)
        if info.num_classes is not None and len(listing.classnames) != info.num_classes:
            listing.notes.append(f"{len(listing.classnames)} classes found, the registry expects "
                                 f"{info.num_classes} (a partial copy, or a different split file)")
    if listing.confined_by is not guard:
        guard.check_entries(listing.entries, listing.source)  # before anything listed is opened
    custom = name.lower() == "custom"  # its class names were checked and cleaned by list_custom
    listing.entries = sanity.dedupe(listing.entries, listing.source, listing.notes, custom)
    sanity.check_path_overlap(listing.entries, listing.source, custom, listing.notes)
    report = CheckReport(dataset=info.name, root=str(root), source=listing.source, classnames=listing.classnames,
                         verify=verify, expected=dict(info.counts) if name.lower() != "custom" else {},
                         allow_missing=allow_missing, notes=list(listing.notes),
                         check_args=_check_args(name, root, sf), series=list(listing.series))
    for split, kind, path, reason in listing.problems:
        report.problems.append(Problem(split, kind, path, reason))
        row = report.rows.setdefault((split, "<class folders>"), ClassCount())
        row.listed += 1
        setattr(row, kind, getattr(row, kind) + 1)
    kept = run_checks(listing.entries, report, progress=progress)
    sanity.check_content_overlap(kept, listing.source, report.notes)
    report.issues, report.gaps = sanity.split_issues(listing.entries, kept, listing.classnames, listing.source,
                                                     custom)
    if not report.ok:
        raise DataCheckError(report)
    if allow_missing:
        report.dropped = Counter({s: sum(1 for e in listing.entries if e.split == s) -
                                     sum(1 for e in kept if e.split == s) for s in SPLITS})
    samples = {s: [] for s in SPLITS}
    for e in kept:
        samples[e.split].append(Sample(e.path, e.label, listing.classnames[e.label], e.patient_id, e.index, e.view))
    if info.classnames is None:
        info = info.model_copy(update={"classnames": list(listing.classnames),
                                       "num_classes": len(listing.classnames)})
    return DatasetSplits(name=info.name, classnames=list(listing.classnames), train=samples["train"],
                         val=samples["val"], test=samples["test"], info=info, report=report,
                         meta={"root": str(root), "source": listing.source,
                               **({"volumes": opts.summary()} if name.lower() == "custom" else {})})


def _check_args(name: str, root: Path, split_file: str | None) -> str:
    """The `medclipsvd data check` arguments that reproduce a load (custom data is named by its root folder in
    the report, but `--pipeline custom` is what loads it)."""
    import shlex

    args = ["--pipeline", "custom" if name.lower() == "custom" else name, "--data-root", str(root)]
    if split_file is not None:
        args += ["--split-file", split_file]
    return " ".join(shlex.quote(a) for a in args)


def write_split(splits: DatasetSplits, path: str | os.PathLike, base: str | os.PathLike) -> Path:
    """Write loaded splits in the benchmark split format (paths relative to ``base``)."""
    from medclipsvd.data.checks import RawEntry
    from medclipsvd.data.sources.splits import write_split_json

    entries = [RawEntry(s, x.path, x.label, x.classname, x.index, x.patient_id, view=x.view) for s in SPLITS
               for x in splits.split(s)]
    return write_split_json(entries, splits.classnames, Path(path), Path(base), meta=dict(splits.meta))
