"""The hospital-data options, defined once and shared by `train`, `evaluate`, `benchmark`, `predict`,
`interpret`, `data check` and `data split` (same names, defaults and help everywhere; the pipeline YAML
uses the same keys: split_file, series, on_bad_series, and under ``input:`` slices, window, axis,
dicom_frames, modality). ``input_flags`` checks what one command was given and returns it as one value.

Every default is "not given" (None): `data check` / `data split` then use middle / auto / axial / middle,
`train` and `benchmark` the pipeline's values (which default to the same), `evaluate`, `predict` and
`interpret` the values the training run recorded - so an adapter is evaluated on the inputs it was
trained on unless a flag says otherwise. Importing this module imports nothing heavy."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

SLICES_HELP = ("How volumes (DICOM series folders, NIfTI, multi-frame DICOM) become 2-D samples: middle "
               "(default; one per volume), slices:N (N evenly spaced), all (every slice), mip[:MM] (max-intensity "
               "slab, 10 mm), 2.5d (three adjacent slices as RGB), roi (the plane with the largest area of the series' "
               "SEG/RTSTRUCT mask); +crop[:MMmm|:Nvox] after any of them cuts the volume to the mask's bounding box "
               "(margin 10 mm by default); +mask:PATTERN uses only the segments/ROIs named like PATTERN (e.g. "
               "roi+crop:5mm+mask:gtv*). 2-D files are unaffected.")
WINDOW_HELP = ("CT intensity window in HU: auto (default: the series' own window, else mediastinum), lung "
               "(W1500/L-600), mediastinum (W350/L50), bone (W2000/L500), brain (W80/L40), abdomen (W400/L50), "
               "custom WIDTH/LEVEL (e.g. 400/40), or multi (lung, mediastinum, bone as RGB; multi:a,b,c to "
               "choose). MR and other modalities use percentile scaling.")
AXIS_HELP = "Slicing axis of volumes after reorienting to a canonical orientation: axial (default), coronal, sagittal."
DICOM_FRAMES_HELP = ("Multi-frame DICOM files: middle (default; the middle frame as a 2-D image), all (every "
                     "frame a 2-D sample), volume (ordered by per-frame positions; --slices applies).")
MODALITY_HELP = ("What volumes without a Modality tag (NIfTI) are: CT (HU windows apply) or MR (percentile "
                 "scaling), overriding the guess from their values (CT when they reach below -500); auto: the "
                 "guess. DICOM series keep their own Modality tag.")
SPLIT_FILE_HELP = ("Split file (benchmark format, e.g. written by `medclipsvd data split`): read it if it exists; "
                   "for custom data without one, the computed patient-grouped split is written there.")

SERIES_HELP = ("Which DICOM series become samples, as KEY=VALUE (repeat the option): modality=CT[,MR], "
               "description='*AX*' (SeriesDescription pattern), image_type=AXIAL, thickness=MIN-MAX (mm), "
               "min_slices=N, per_study=all|thinnest|largest, include=localizer,secondary,derived (left out by "
               "default). RTSTRUCT, SEG, RTDOSE, SR and other non-images never are.")
ON_BAD_SERIES_HELP = ("A series that cannot be read as one volume (missing slice, mixed orientation, ...): error "
                      "(default; fail after listing every such series) or skip (leave it out and list it).")

INHERIT = " Default: the pipeline's / training run's value, else {}."
split_file_opt = typer.Option(None, "--split-file", help=SPLIT_FILE_HELP)
slices_opt = typer.Option(None, "--slices", help=SLICES_HELP + INHERIT.format("middle"), show_default=False)
window_opt = typer.Option(None, "--window", help=WINDOW_HELP + INHERIT.format("auto"), show_default=False)
axis_opt = typer.Option(None, "--axis", help=AXIS_HELP + INHERIT.format("axial"), show_default=False)
dicom_frames_opt = typer.Option(None, "--dicom-frames", help=DICOM_FRAMES_HELP + INHERIT.format("middle"),
                                show_default=False)
modality_opt = typer.Option(None, "--modality", help=MODALITY_HELP + INHERIT.format("auto"), show_default=False)


series_opt = typer.Option(None, "--series", help=SERIES_HELP, show_default=False)
on_bad_series_opt = typer.Option(None, "--on-bad-series", help=ON_BAD_SERIES_HELP, show_default=False)


@dataclass(frozen=True)
class InputFlags:
    """What the hospital-data flags of one command said, checked. Only the flags given are kept: one left out
    leaves the pipeline's or the training run's value in place (``over``, ``merged``)."""

    policy: dict = field(default_factory=dict)  # the InputPolicy keys given (slices, window, axis, ...)
    split_file: str | None = None
    series: dict | None = None  # the SeriesFilter keys given (what differs from its defaults)
    on_bad_series: str | None = None

    def over(self, base=None):
        """The InputPolicy ``base`` (default: the defaults) with the given flags applied."""
        import dataclasses

        from medclipsvd.data.volumes.policy import InputPolicy

        return dataclasses.replace(base or InputPolicy(), **self.policy)

    def load_kwargs(self) -> dict:
        """The flags given, as keyword arguments of `load_dataset`, `RunSpec` (which nests the policy keys)
        and `spec_from_pipeline(volume=...)`."""
        rest = {"split_file": self.split_file, "series": self.series, "on_bad_series": self.on_bad_series}
        return {**self.policy, **{k: v for k, v in rest.items() if v is not None}}

    def merged(self, base: dict) -> dict:
        """``base`` (a pipeline's ``load_options()``) with the given flags over it."""
        return {**{k: v for k, v in base.items() if v is not None}, **self.load_kwargs()}


def input_flags(split_file: Optional[Path] = None, slices: Optional[str] = None, window: Optional[str] = None,
                axis: Optional[str] = None, dicom_frames: Optional[str] = None, modality: Optional[str] = None,
                series: Optional[list[str]] = None, on_bad_series: Optional[str] = None) -> InputFlags:
    """The hospital-data flags of a command as one checked value. Each flag is validated on its own, so a bad
    value is one line naming it (``--window foo: ...``, ``--series: ...``) before any work."""
    from medclipsvd.data.volumes.policy import check_option
    from medclipsvd.data.volumes.selection import SeriesFilter
    from medclipsvd.errors import DataError

    given = {"slices": slices, "window": window, "axis": axis, "dicom_frames": dicom_frames, "modality": modality}
    policy = {k: v for k, v in given.items() if v is not None}
    for k, v in policy.items():
        try:
            check_option(k, v)
        except DataError as exc:
            raise DataError(f"--{k.replace('_', '-')} {v}: {exc}") from None
    try:
        chosen = SeriesFilter.parse(list(series)).to_dict() if series else None
    except DataError as exc:
        raise DataError(f"--series: {exc}") from None
    if on_bad_series is not None:
        SeriesFilter(on_bad_series=on_bad_series).validate()  # its message names --on-bad-series
    return InputFlags(policy, None if split_file is None else str(split_file), chosen, on_bad_series)
