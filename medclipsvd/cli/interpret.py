"""`medclipsvd interpret`: what did σ-only adaptation change, in words and pictures."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medclipsvd.cli import options as opt
from medclipsvd.cli.hospital_options import (axis_opt, dicom_frames_opt, input_flags, slices_opt, split_file_opt,
                                             window_opt)
from medclipsvd.errors import MedClipSVDError


def interpret(
    adapter: Path = typer.Option(..., "--adapter", "-a", help="Adapter folder (adapter_config.json + adapter.safetensors) "
                                 "written by `medclipsvd train` or save_adapter."),
    weights: Optional[str] = opt.weights("Weights of the adapter's base model: hf-hub:ORG/REPO, local-dir:DIR or "
                                         "a file. Default: the source recorded in the adapter."),
    backbone_weights: Optional[str] = opt.alias("--backbone-weights"),
    text_dir: Optional[str] = opt.text_dir(),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of images (searched recursively) used to "
                                          "describe the most changed heads."),
    pipeline: Optional[str] = opt.pipeline("Pipeline or registered dataset to take the images from (with "
                                           "--data-root), e.g. breast_ultrasound or BUSI."),
    dataset_old: Optional[str] = opt.dataset_alias(),
    data_root: Optional[Path] = opt.data_root("Folder holding the dataset (see `medclipsvd data`)."),
    split: str = typer.Option("test", "--split", help="Dataset split to take the images from."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Allow images (and sub-folders) that "
                                         "are symlinks leading outside the --images folder or the data root "
                                         "(refused by default)."),
    max_images: int = typer.Option(256, "--max-images", min=2, help="Use at most this many images (seeded subset, "
                                   "class-balanced for datasets)."),
    output: Path = opt.output("Folder for report.md, report.html, summary.json and figures/.",
                              default=Path("outputs/interpret")),
    force: bool = opt.force("Replace a report already in --output (refused otherwise)."),
    pool: str = typer.Option("auto", "--pool", help="Description pool: auto (biomedical for BiomedCLIP, general "
                             "otherwise), general, biomedical, or a text file with one description per line."),
    heads: int = typer.Option(3, "--heads", min=0, help="Describe this many of the most changed vision heads."),
    texts: int = typer.Option(5, "--texts", min=1, help="Descriptions chosen per head (TextSpan steps)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
    device: str = opt.device("auto (CUDA if available, else CPU), cpu, cuda or cuda:N."),
    precision: str = opt.precision(),
    seed: int = opt.seed("Seed of the image subset."),
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    tracking_uri: Optional[str] = opt.tracking_uri(),
    no_mlflow: bool = opt.no_mlflow("Do not log the report to MLflow."),
) -> None:
    """Report what an adapter changed, in words and pictures.

    A heat map of the relative change of singular values (layers × matrix types), the most amplified and
    suppressed singular directions, the attention heads ranked by the change of their value-output map
    W_O^h·W_V^h, and, for the most changed vision heads, the descriptions that best explain the head's
    contribution to the image embedding before and after adaptation (TextSpan). Writes report.md and a
    self-contained report.html with figures. With MLflow on, the report is logged as a run nested under
    the adapter's training run when that run is in the same store.

    Example:

      medclipsvd interpret --adapter runs/busi-k4/adapter --pipeline BUSI \\
        --data-root data/biomedical
    """
    import time

    from rich.console import Console

    from medclipsvd.device import precision_plan, resolve_device
    from medclipsvd.interpret.analysis import interpret as run_interpret
    from medclipsvd.interpret.analysis import load_pair
    from medclipsvd.interpret.images import dataset_images, folder_images
    from medclipsvd.interpret.report import write_report

    console = Console(stderr=True)
    weights = opt.pick(weights, backbone_weights, "--weights", "--backbone-weights")
    pipeline = opt.pick_pipeline(pipeline, dataset_old)
    if images is not None and pipeline is not None:
        raise MedClipSVDError("pass either --images DIR or --pipeline NAME --data-root DIR, not both")
    if pipeline is not None and data_root is None:
        raise MedClipSVDError(f"--pipeline {pipeline} needs --data-root DIR (the folder that holds its dataset)")
    dataset = None if pipeline is None else opt.dataset_of(pipeline)[0]
    earlier = [n for n in ("report.md", "report.html", "summary.json") if (output / n).exists()]
    if earlier and not force:  # before any work
        raise MedClipSVDError(f"--output {output} already holds a report ({', '.join(earlier)}); pass --force to "
                              "replace it, or choose another --output")
    precision_plan(precision, resolve_device(device))  # refused before any model is loaded
    if pool != "auto":  # a bad pool file (missing, a FIFO, too short) is reported before any model is loaded
        from medclipsvd.interpret.descriptions import load_descriptions

        load_descriptions(pool)
    refs, source = None, ""
    _check_run_preprocess(adapter)
    volume = _volume_policy(adapter, input_flags(split_file, slices, window, axis, dicom_frames).load_kwargs())
    if images is not None:
        refs, source = folder_images(images, max_images, seed, volume, follow_symlinks), str(images)
    elif dataset is not None:
        refs = dataset_images(dataset, data_root, split, max_images, seed, volume, follow_symlinks)
        source = f"{dataset} {split} split"

    tracker = _tracker(tracking_uri, no_mlflow)  # before any work: an unreachable server stops us here
    t0 = time.perf_counter()
    with console.status("loading the base model and the adapter"):
        pair = load_pair(adapter, weights, text_dir, str(resolve_device(device)))
    load_s = time.perf_counter() - t0
    console.print(f"loaded {pair.before.name} + adapter {adapter} ({len(pair.infos)} adapted matrices) in {load_s:.1f} s")

    from medclipsvd.io.progress import progress_bar

    total = 2 * len(refs) if refs else 0
    with progress_bar(total=total, desc="images (base, then adapted)", unit="img", disable=not total) as bar:
        result = run_interpret(pair, refs, pool=pool, n_heads=heads, n_texts=texts, batch_size=batch_size,
                               image_source=source, on_batch=bar.update, precision=precision)
    result.timings = {"load": load_s, **result.timings}
    paths = write_report(result, output)
    console.print(f"report: {paths['html']} and {paths['markdown']}")
    for m in result.matrices[:3]:
        console.print(f"  {m.target}: ‖σ−σ₀‖/‖σ₀‖ = {m.rel_change:.4g}")
    for d in result.described:
        console.print(f"  {d.head.key}: before {d.before.texts[:2]} → after {d.after.texts[:2]}")
    from medclipsvd.tracking.cli_support import training_run_id

    _log_to_mlflow(tracker, result, paths, console, training_run_id(adapter, tracker))


def _check_run_preprocess(adapter: Path) -> None:
    """interpret does not apply the training run's MONAI preprocess, but a results.json beside the adapter
    whose `preprocess` is off the allow-list is a tampered run folder: refused here as by every other reader
    (one line naming the file and the step). A results.json that cannot be read is ignored, as before."""
    from medclipsvd.data.preprocess_steps import validate_steps
    from medclipsvd.io.safeload import load_json

    results = Path(adapter).parent / "results.json"
    try:
        data = load_json(results) if results.is_file() else None
    except (OSError, ValueError):
        return
    run = data.get("run") if isinstance(data, dict) else None
    if isinstance(run, dict):
        validate_steps(run.get("preprocess"), source=str(results))


def _volume_policy(adapter: Path, given: dict) -> dict:
    """The hospital options given on the command line, else the ones the adapter was trained with: the run's
    record (results.json "run"."input" beside the adapter), or for adapters saved before that record,
    adapter_config.json "extra"."input"."""
    from medclipsvd.data.volumes.policy import KEYS
    from medclipsvd.io.safeload import load_json

    trained = {}
    for path, where in ((Path(adapter).parent / "results.json", ("run", "input")),
                        (Path(adapter) / "adapter_config.json", ("extra", "input"))):
        if not path.is_file():
            continue
        try:
            node = load_json(path)
        except (OSError, ValueError):
            continue
        for key in where:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            trained = {k: node[k] for k in KEYS if k in node}
            break
    return {**{k: v for k, v in trained.items() if v is not None}, **given}


def _tracker(tracking_uri: Optional[str], no_mlflow: bool):
    """MLflow through medclipsvd.tracking.make_tracker when tracking is on, else a NullTracker."""
    from medclipsvd import tracking

    make = getattr(tracking, "make_tracker", None)
    if make is None:
        return tracking.NullTracker()
    return make(tracking_uri, not no_mlflow)


def _log_to_mlflow(tracker, result, paths, console, train_run: str | None = None) -> None:
    from medclipsvd.tracking import NullTracker

    if isinstance(tracker, NullTracker):
        return
    summary = result.summary()
    metrics = {k: float(v) for k, v in summary.items() if k.endswith("_rel_sigma_change")}
    metrics.update({f"head_ov_change_{i + 1}": h.ov_change for i, h in enumerate(result.heads[:5])})
    tags = {"medclipsvd.command": "interpret", "backbone": result.backbone}
    if train_run:  # shown under its training run in the MLflow UI
        tags.update({"medclipsvd.training_run_id": train_run, "mlflow.parentRunId": train_run})
    with tracker.run("interpret", tags=tags):
        tracker.log_params({"adapter": result.adapter, "backbone": result.backbone, "n_images": result.n_images,
                            "pool": result.pool, "precision": result.precision})
        tracker.log_metrics(metrics)
        for key, path in paths.items():
            tracker.log_artifact(str(path), "interpret/figures" if key.startswith("figure_") else "interpret")
    console.print(f"logged to MLflow run {getattr(tracker, 'last_run_id', None) or tracker.run_id}")


def register(app: typer.Typer) -> None:
    app.command("interpret")(interpret)
