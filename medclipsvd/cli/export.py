"""`medclipsvd export`: a trained adapter as a self-describing package for another runtime (MONAI bundle) or for
sharing (a Hugging Face hub folder with a model card)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medclipsvd.cli import hospital_options
from medclipsvd.cli import options as opt


def export(
    adapter: Path = typer.Option(..., "--adapter", "-a", help="Adapter folder of a `medclipsvd train` output "
                                 "(<output>/adapter; its results.json names the classes and settings)."),
    fmt: str = typer.Option("monai-bundle", "--format", "-f", help="Export format: monai-bundle, or hf (the adapter "
                            "files + a model card README.md, ready for `hf upload`)."),
    output: Path = opt.output("Folder to write (must be new or empty, unless --force).", required=True),
    slices: Optional[str] = hospital_options.slices_opt,
    window: Optional[str] = hospital_options.window_opt,
    axis: Optional[str] = hospital_options.axis_opt,
    dicom_frames: Optional[str] = hospital_options.dicom_frames_opt,
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Check that the adapter belongs to this "
                                           "backbone (default: the one it names)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Base backbone weights (hf-hub:, local-dir:, file) "
                                          "when the training run's source is not reachable from here."),
    text_dir: Optional[str] = typer.Option(None, "--text-dir", help="Local tokenizer folder (BiomedCLIP) to "
                                           "encode the class prompts."),
    overwrite: bool = typer.Option(False, "--force", "--overwrite", help="Replace a non-empty --output folder "
                                   "(the old one stays until the new bundle is complete)."),
) -> None:
    """Export an adapter as a MONAI bundle or a model-card folder (hf).

    The bundle holds the MERGED model (safetensors), MONAI configs and a README. It reads inputs as the
    training run did (its slices/window/axis/MONAI preprocess; the flags override them) and needs medclipsvd
    installed wherever it runs.

    --format hf writes the adapter files and a model card (README.md: base model and revision, σ count, data,
    metrics with their 95 % intervals from the run's results.json, intended use and limitations):

      medclipsvd export --adapter runs/ct/adapter --format hf --output share/ct
      hf upload ORG/NAME share/ct

    Example:

      medclipsvd export --adapter runs/ct/adapter --format monai-bundle \\
        --output bundles/ct

    Then run it with MONAI's own runner:

      cd bundles/ct && python -m monai.bundle run \\
        --config_file configs/inference.json --input SERIES_DIR"""
    from medclipsvd.errors import MedClipSVDError

    if fmt not in ("monai-bundle", "hf"):
        raise MedClipSVDError(f"--format {fmt!r} is not supported; choose monai-bundle or hf")
    if fmt == "hf":
        from medclipsvd.export.hf_card import export_hf

        out = export_hf(adapter, output, overwrite=overwrite)
        typer.echo(f"written: {out} (adapter files, README.md model card)")
        typer.echo(f"share it:  hf upload ORG/NAME {out}")
        return
    from medclipsvd.export.monai_bundle import export_monai_bundle

    views = hospital_options.input_flags(slices=slices, window=window, axis=axis, dicom_frames=dicom_frames).policy
    out = export_monai_bundle(adapter, output, backbone=backbone, weights=weights, text_dir=text_dir,
                              overwrite=overwrite, **views)
    typer.echo(f"written: {out} (configs/inference.json, configs/metadata.json, models/model.safetensors, "
               "docs/README.md)")
    typer.echo(f"run it:  cd {out} && python -m monai.bundle run --config_file configs/inference.json "
               "--input SERIES_DIR_OR_NIFTI")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
