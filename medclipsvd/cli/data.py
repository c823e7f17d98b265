"""`medclipsvd data`: list the registered datasets, check a data root, write a hospital split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medclipsvd.cli.hospital_options import (axis_opt, dicom_frames_opt, slices_opt, split_file_opt, volume_kwargs,
                                             window_opt)

data_app = typer.Typer(
    name="data",
    help="Datasets: `data list` shows the registry, `data check` validates a data root against its split "
         "(per split and class: present / missing / unreadable / mislabelled), `data split` writes a "
         "patient-grouped split file for your own folder or CSV dataset.",
    no_args_is_help=True,
)


@data_app.command("list")
def list_cmd(
    suite: Optional[str] = typer.Option(None, "--suite", help="biomedical (the 10 CLIP-SVD benchmarks), natural "
                                        "(the 11 CoOp datasets), imagenet_variants, or extra; default all."),
) -> None:
    """List registered datasets with their classes, modality, layout and expected split sizes."""
    from rich.console import Console
    from rich.table import Table

    from medclipsvd.data import dataset_info, list_datasets

    console = Console()
    if not console.is_terminal:  # piped / captured: do not squeeze the table to 80 columns
        console = Console(width=170)
    table = Table(title="registered datasets (see docs/datasets.md to obtain and arrange them)")
    for col in ("name", "suite", "modality", "classes", "train/val/test", "layout", "hflip"):
        table.add_column(col, overflow="fold")
    for name in list_datasets(suite):
        i = dataset_info(name)
        counts = "/".join(str(i.counts.get(s, "?")) for s in ("train", "val", "test"))
        layout = " or ".join(f"{l.kind} ({'/'.join(x for x in (l.dir, l.split_file or l.npz_file) if x)})"
                             for l in i.layouts)
        table.add_row(i.name, i.suite, i.modality, str(i.num_classes), counts, layout, "yes" if i.hflip else "no")
    console.print(table)


@data_app.command("check")
def check_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Registered name (case-insensitive, e.g. BUSI, eurosat) "
                                "or 'custom' for a folder of class folders / a CSV."),
    root: Path = typer.Option(..., "--root", "-r", help="Folder holding the dataset's folder (e.g. data/ with "
                              "data/BUSI/), the dataset folder itself, or for custom the folder / CSV."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Drop missing and unreadable entries, count "
                                       "them, and exit 0 (mislabelled entries still fail)."),
    verify: str = typer.Option("decode", "--verify", help="exists (stat only), header (parse headers), decode "
                               "(decode every image: finds truncated files; slowest)."),
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    examples: int = typer.Option(5, "--examples", min=0, help="How many problem entries to print per kind."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON to this file "
                                            "(counts per split and class, problem examples) for CI or MLflow."),
) -> None:
    """Validate a data root against its split file.

    Prints, per split and class, how many listed entries are present, missing, unreadable or
    mislabelled, with examples. Exit status 0 when complete (or usable with --allow-missing), 1
    otherwise. For very large roots (ImageNet) use --verify header.

    For hospital data (`--dataset custom`), DICOM series and NIfTI volumes are counted as samples: one per
    series with --slices middle, one per slice with --slices all (the table then reports slices per series).

    Example: medclipsvd data check --dataset BUSI --root data/biomedical"""
    from medclipsvd.data import DataCheckError, load_dataset

    vol = volume_kwargs(split_file, slices, window, axis, dicom_frames)
    try:
        splits = load_dataset(dataset, root, allow_missing=allow_missing, verify=verify, progress=True, **vol)
    except DataCheckError as exc:  # the full report: print it, fail with status 1
        typer.echo(exc.report.format(max_examples=examples))
        _write_json(json_out, exc.report)
        raise typer.Exit(1)
    typer.echo(splits.report.format(max_examples=examples))
    _write_json(json_out, splits.report)
    c = splits.counts()
    typer.echo(f"  loaded: train {c['train']}, val {c['val']}, test {c['test']}")
    _print_volumes(splits)


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


def _write_json(path: Optional[Path], report) -> None:
    if path is not None:
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
        typer.echo(f"  report written to {path}")


@data_app.command("split")
def split_cmd(
    root: Path = typer.Option(..., "--root", "-r", help="Folder of class folders (optionally under train/val/test) "
                              "or a CSV with columns path,label[,patient_id][,split]."),
    out: Path = typer.Option(..., "--out", "-o", help="Split file to write (benchmark format + a meta block)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient-grouped stratified split."),
    fractions: str = typer.Option("0.5,0.2,0.3", "--fractions", help="train,val,test fractions for the splits "
                                  "that are not given."),
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    nifti_slices: Optional[str] = typer.Option(None, "--nifti-slices", hidden=True,
                                               help="Old name of --slices (middle | all)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing split file."),
) -> None:
    """Write a reproducible, patient-grouped split file for your own folder or CSV dataset.

    Each patient stays in one split, classes are stratified, and the same seed gives the same split.
    Splits already given (train/val/test folders or a split column) are kept; the missing ones are carved
    from train. Use it with `medclipsvd data check -d custom -r ROOT --split-file OUT` or
    `load_dataset("custom", ROOT, split_file=OUT)`."""
    from medclipsvd.data import load_dataset
    from medclipsvd.errors import DataError

    if out.exists() and not force:
        raise DataError(f"{out} exists; pass --force to overwrite it (or choose another --out).")
    if out.exists():
        out.unlink()
    try:
        fr = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        raise DataError(f"--fractions must be three numbers like 0.5,0.2,0.3, not {fractions!r}") from None
    vol = volume_kwargs(None, slices or nifti_slices, window, axis, dicom_frames)
    splits = load_dataset("custom", root, split_file=out, seed=seed, fractions=fr, verify="exists",
                          allow_missing=True, **vol)
    c = splits.counts()
    typer.echo(f"wrote {out}: {len(splits.classnames)} classes, train {c['train']}, val {c['val']}, "
               f"test {c['test']}")
    for note in splits.report.notes:
        typer.echo(f"  note: {note}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
