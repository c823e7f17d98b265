"""`medclipsvd data`: list the registered datasets, check a data root, write a hospital split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medclipsvd.cli import options as opt
from medclipsvd.cli.hospital_options import (axis_opt, dicom_frames_opt, input_flags, modality_opt, on_bad_series_opt,
                                             series_opt, slices_opt, split_file_opt, window_opt)

data_app = typer.Typer(
    name="data",
    help="Datasets: list the registry, check a data root, write splits.\n\n"
         "`data list` shows the registry, `data check` validates a data root against its split (per split "
         "and class: present / missing / unreadable / mislabelled), `data split` writes a patient-grouped "
         "split file for your own folder or CSV dataset.",
    no_args_is_help=True,
)


@data_app.command("list")
def list_cmd(
    suite: Optional[str] = typer.Option(None, "--suite", help="biomedical (the 10 CLIP-SVD benchmarks), natural "
                                        "(the 11 CoOp datasets), imagenet_variants, or extra; default all."),
    layouts: bool = typer.Option(False, "--layouts", help="Also list the folder layout each dataset expects."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per dataset."),
) -> None:
    """List registered datasets: classes, modality, split sizes.

    Example:

      medclipsvd data list --suite biomedical --layouts"""
    from rich.console import Console
    from rich.table import Table

    from medclipsvd.data import dataset_info, list_datasets

    order = {"biomedical": 0, "natural": 1, "imagenet_variants": 2, "extra": 3}
    infos = sorted((dataset_info(name) for name in list_datasets(suite)),
                   key=lambda i: (order.get(i.suite, len(order)), i.name.lower()))
    if json_out:
        for i in infos:
            typer.echo(i.model_dump_json())
        return
    console = Console()
    # Five narrow columns and one section per suite: readable in an 80-column terminal.
    table = Table(title="registered datasets (docs/datasets.md: how to obtain and arrange them)")
    for col, justify in (("name", "left"), ("modality", "left"), ("classes", "right"), ("train/val/test", "right"),
                         ("hflip", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "modality")
    current = None
    for i in infos:
        if i.suite != current:
            if current is not None:
                table.add_section()
            table.add_row(f"[bold]{i.suite}[/]", "", "", "", "")
            current = i.suite
        counts = "/".join(str(i.counts.get(s, "?")) for s in ("train", "val", "test"))
        table.add_row(f"  {i.name}", i.modality, str(i.num_classes), counts, "yes" if i.hflip else "no")
    console.print(table)
    if layouts:
        console.print("folder layouts (under --data-root):")
        for i in infos:
            layout = " or ".join(f"{l.kind} ({'/'.join(x for x in (l.dir, l.split_file or l.npz_file) if x)})"
                                 for l in i.layouts)
            console.print(f"  {i.name}: {layout}", soft_wrap=True)
    else:
        console.print("folder layouts: medclipsvd data list --layouts")


@data_app.command("check")
def check_cmd(
    pipeline: Optional[str] = opt.pipeline("Pipeline (e.g. breast_ultrasound, its dataset and input options) or "
                                           "registered dataset name (case-insensitive, e.g. BUSI, eurosat), or "
                                           "'custom' for a folder of class folders / a CSV. Required."),
    dataset_old: Optional[str] = opt.dataset_alias(),
    data_root: Optional[Path] = opt.data_root("Folder holding the dataset's folder (e.g. data/ with data/BUSI/), "
                                              "the dataset folder itself, or for custom the folder / CSV. Required."),
    root: Optional[Path] = opt.alias("--root", "-r"),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Drop missing and unreadable entries, count "
                                       "them, and exit 0 (mislabelled entries still fail)."),
    verify: str = typer.Option("decode", "--verify", help="exists (stat only), header (parse headers), decode "
                               "(decode every image: finds truncated files; slowest)."),
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    series: Optional[list[str]] = series_opt,
    on_bad_series: Optional[str] = on_bad_series_opt,
    modality: Optional[str] = modality_opt,
    examples: int = typer.Option(5, "--examples", min=0, help="How many problem entries to print per kind."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON to this file "
                                            "(counts per split and class, problem examples) for CI or MLflow.",
                                            parser=opt.output_path, metavar="PATH"),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Allow entries that are symlinks "
                                         "leading outside the data root (refused by default)."),
) -> None:
    """Validate a data root against its split file.

    Prints, per split and class, how many listed entries are present, missing, unreadable or
    mislabelled, with examples, and what makes the splits unusable as a whole (an empty test split, one
    class, a class with no train images). Exit status 0 when complete (or usable with --allow-missing), 1
    otherwise. For very large roots (ImageNet) use --verify header.

    For hospital data (`--pipeline custom`), DICOM series and NIfTI volumes are counted as samples: one per
    series with --slices middle, one per slice with --slices all (the table then reports slices per series).
    A second table lists every series, volume and DICOM object found with its fate: used, filtered (and
    why: localizer, secondary capture, derived, --series rules), not image (RTSTRUCT, SEG, SR, ...) or
    refused (and why); --on-bad-series skip leaves refused series out instead of failing.

    Example:

      medclipsvd data check --pipeline BUSI --data-root data/biomedical"""
    from medclipsvd.data import DataCheckError, load_dataset
    from medclipsvd.data.volumes.selection import SelectionError, format_table

    dataset, pipeline_vol = opt.dataset_of(opt.pick_pipeline(pipeline, dataset_old, required=True))
    root = opt.pick(data_root, root, "--data-root", "--root", required=True)
    flags = input_flags(split_file, slices, window, axis, dicom_frames, modality, series, on_bad_series)
    vol = flags.merged(pipeline_vol)  # the command line over the pipeline's keys
    _check_json_target(json_out)  # before the check, which can take hours on a large root
    try:
        splits = load_dataset(dataset, root, allow_missing=allow_missing, verify=verify, progress=True,
                              follow_symlinks=follow_symlinks, **vol)
    except DataCheckError as exc:  # the full report: print it, fail with status 1
        typer.echo(exc.report.format(max_examples=examples))
        _write_json(json_out, exc.report)
        raise typer.Exit(1)
    except SelectionError as exc:  # every series and its fate first, then the one-line error (status 2)
        typer.echo(f"data check: {dataset} at {root}")
        typer.echo("\n".join(format_table(exc.fates, str(Path(root).expanduser().absolute()))))
        raise
    typer.echo(splits.report.format(max_examples=examples))
    _write_json(json_out, splits.report)
    c = splits.counts()
    typer.echo(f"  loaded: train {c['train']}, val {c['val']}, test {c['test']}")
    _print_volumes(splits)
    if splits.report.gaps:  # loadable, but no run can train and score it (an empty test split ...)
        raise typer.Exit(1)


def _print_volumes(splits) -> None:
    """Hospital data: samples per volume (series / NIfTI / multi-frame), so `--slices all` shows slices per series."""
    from collections import Counter

    per = Counter(s.path for sp in ("train", "val", "test") for s in splits.split(sp) if s.view)
    if not per:
        return
    n_series = len(per)
    typer.echo(f"  volumes: {n_series} ({sum(per.values())} samples; view {next(iter(_views(splits)))})")
    root = splits.meta.get("root", "")
    for path, n in sorted(per.items()):
        rel = path[len(root):].lstrip("/") if root and path.startswith(root) else path
        typer.echo(f"    {rel}: {n} sample(s)")


def _views(splits):
    return {s.view for sp in ("train", "val", "test") for s in splits.split(sp) if s.view}


def _check_json_target(path: Optional[Path]) -> None:
    """--json names a file to (re)write: not a folder, and not a FIFO or device (opening one for writing
    blocks until some other process reads it)."""
    from medclipsvd.errors import MedClipSVDError
    from medclipsvd.io.special import special_problem

    if path is None:
        return
    if path.is_dir():
        raise MedClipSVDError(f"--json {path}: is a folder; name the file to write the report to, e.g. "
                              f"--json {path / 'report.json'}")
    problem = special_problem(path, "file to write the report to")
    if problem:
        raise MedClipSVDError(f"--json {path}: {problem}")


def _write_json(path: Optional[Path], report) -> None:
    if path is not None:
        import json

        from medclipsvd.io import write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(report.to_dict(), indent=1))  # atomic: an old report stays whole on failure
        typer.echo(f"  report written to {path}")


@data_app.command("split")
def split_cmd(
    data_root: Optional[Path] = opt.data_root("Folder of class folders (optionally under train/val/test) or a "
                                              "CSV with columns path,label,patient_id,split (the last two "
                                              "optional). Required."),
    output: Optional[Path] = opt.output("Split file to write (benchmark format + a meta block). Required."),
    root: Optional[Path] = opt.alias("--root", "-r"),
    out: Optional[Path] = opt.alias("--out", path_output=True),
    seed: int = opt.seed("Seed of the patient-grouped stratified split."),
    fractions: str = typer.Option("0.5,0.2,0.3", "--fractions", help="train,val,test fractions for the splits "
                                  "that are not given."),
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    series: Optional[list[str]] = series_opt,
    on_bad_series: Optional[str] = on_bad_series_opt,
    modality: Optional[str] = modality_opt,
    nifti_slices: Optional[str] = typer.Option(None, "--nifti-slices", hidden=True,
                                               help="Old name of --slices (middle | all)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing split file."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Allow entries that are symlinks "
                                         "leading outside the data root (refused by default)."),
) -> None:
    """Write a reproducible, patient-grouped split file for your own data.

    Each patient stays in one split, classes are stratified, and the same seed gives the same split.
    Splits already given (train/val/test folders or a split column) are kept; the missing ones are carved
    from train. Use the file with `data check` (below) or `load_dataset("custom", ROOT, split_file=OUT)`.

    Example:

      medclipsvd data split --data-root hospital/ct --slices slices:5 \\
        --window multi --output ct-split.json
      medclipsvd data check --pipeline ct_study_folder --data-root hospital/ct \\
        --split-file ct-split.json"""
    from medclipsvd.data import load_dataset
    from medclipsvd.errors import DataError

    import os

    root = opt.pick(data_root, root, "--data-root", "--root", required=True)
    out = opt.pick(output, out, "--output", "--out", required=True)

    if out.exists() and not force:
        raise DataError(f"{out} exists; pass --force to overwrite it (or choose another --output).")
    fr = _fractions(fractions)
    vol = input_flags(None, slices or nifti_slices, window, axis, dicom_frames, modality, series,
                      on_bad_series).load_kwargs()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # the old split survives a failed run
    try:
        splits = load_dataset("custom", root, split_file=tmp, seed=seed, fractions=fr, verify="exists",
                              allow_missing=True, follow_symlinks=follow_symlinks, **vol)
        empty = [s for s in ("train", "test") if not splits.counts()[s]]
        if empty:  # a split file no run can train on or score: not written
            raise DataError(f"--fractions {fractions}: the {' and '.join(empty)} split would be empty with "
                            f"{sum(splits.counts().values())} images; give it a larger fraction, or add images. "
                            f"{out} was not written.")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    splits.report.notes = [n.replace(str(tmp), str(out)) for n in splits.report.notes]
    c = splits.counts()
    typer.echo(f"wrote {out}: {len(splits.classnames)} classes, train {c['train']}, val {c['val']}, "
               f"test {c['test']}")
    for note in splits.report.notes:
        typer.echo(f"  note: {note}")


def _fractions(text: str) -> tuple[float, float, float]:
    """--fractions: three finite numbers in [0, 1] summing to 1, train and test above 0 (the split must be
    trainable and scorable; a NaN would otherwise slip through every comparison)."""
    import math

    from medclipsvd.errors import DataError

    try:
        fr = tuple(float(x) for x in text.split(","))
    except ValueError:
        fr = ()
    if len(fr) != 3:
        raise DataError(f"--fractions must be three numbers train,val,test like 0.5,0.2,0.3, not {text!r}")
    if not all(math.isfinite(f) and 0 <= f <= 1 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise DataError(f"--fractions {text}: each fraction must be a number from 0 to 1 and the three must sum "
                        f"to 1, e.g. 0.5,0.2,0.3")
    if fr[0] == 0 or fr[2] == 0:
        raise DataError(f"--fractions {text}: the {'train' if fr[0] == 0 else 'test'} fraction is 0, so that "
                        f"split would be empty; give it a share, e.g. 0.5,0.2,0.3")
    return fr


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
