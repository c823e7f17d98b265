"""`medclipsvd train | evaluate | benchmark | demo | pipelines`: thin wrappers over medclipsvd.engine
and medclipsvd.protocols (heavy imports happen inside the commands so `--help` stays fast)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from medclipsvd.cli.hospital_options import (axis_opt, dicom_frames_opt, slices_opt, split_file_opt, volume_kwargs,
                                             window_opt)

DEVICE_HELP = "auto (CUDA with bf16 autocast if available, else CPU fp32), cpu, cuda or cuda:N."
_weights_opt = typer.Option(None, "--weights", help="Weight source: hf-hub:ORG/REPO, local-dir:DIR or a file "
                                                     "(default: the backbone's registered source).")
_text_dir_opt = typer.Option(None, "--text-dir", help="Local folder with the text tokenizer (BiomedCLIP's "
                                                       "BiomedBERT) for offline use.")
_random_init_opt = typer.Option(False, "--random-init", help="Full-size architecture with random weights "
                                                             "(no download; for timing, not for accuracy).")
_allow_missing_opt = typer.Option(False, "--allow-missing", help="Drop split entries whose file is absent "
                                  "(partial datasets) instead of failing.")
_tracking_uri_opt = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI "
                                 "or ./mlruns).")
_no_mlflow_opt = typer.Option(False, "--no-mlflow", help="Do not log to MLflow.")


def _backbone_kwargs(weights, text_dir, random_init) -> dict:
    kw = {}
    if weights:
        kw["weights"] = weights
    if text_dir:
        kw["text_dir"] = text_dir
    if random_init:
        kw["random_init"] = True
    return kw


def _tracker(tracking_uri: Optional[str], no_mlflow: bool):
    """MLflow when medclipsvd.tracking.make_tracker exists and tracking is on; otherwise no tracking."""
    from medclipsvd import tracking
    from medclipsvd.tracking import NullTracker

    make = getattr(tracking, "make_tracker", None)
    if make is None:
        if tracking_uri and not no_mlflow:
            typer.secho("note: MLflow tracking is not available in this installation; results stay on disk",
                        err=True, fg=typer.colors.YELLOW)
        return NullTracker()
    return make(tracking_uri, not no_mlflow)


def _print_metrics(results: dict, out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{results.get('dataset')} · {results.get('method')} · K={results.get('shots')} · "
                        f"seed {results.get('seed')}")
    for col in ("split", "n", "accuracy", "balanced acc.", "macro-F1", "AUROC (OvR)", "ECE"):
        table.add_column(col, justify="right")
    for split, m in results.get("eval", {}).items():
        if "accuracy" not in m:
            table.add_row(split, "–", m.get("skipped", "–"), "", "", "", "")
            continue
        for name, row in ((split, m), (f"{split} (per study)", m.get("study"))):
            if row:  # hospital data: slice-level row, then study-level (mean probability per study)
                table.add_row(name, str(row["n"]), f"{row['accuracy']:.2f}", f"{row['balanced_accuracy']:.2f}",
                              f"{row['macro_f1']:.2f}",
                              "–" if row["auroc_ovr"] != row["auroc_ovr"] else f"{row['auroc_ovr']:.3f}",
                              f"{row['ece']:.3f}")
    console.print(table)
    if "hm" in results.get("summary", {}):
        console.print(f"harmonic mean of base and new: {results['summary']['hm']:.2f}")
    if out is not None:
        console.print(f"outputs: {out}  (results.json, adapter/, plots/)")


# ---------------------------------------------------------------------------------------------
def pipelines(json_out: bool = typer.Option(False, "--json", help="One JSON object per pipeline.")) -> None:
    """List the pipelines (pipelines/*.yaml): name, dataset, backbone, protocol and what it is for."""
    from medclipsvd.engine.config import list_pipelines, load_pipeline

    rows = [load_pipeline(n) for n in list_pipelines()]
    if json_out:
        for p in rows:
            typer.echo(p.model_dump_json())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="medclipsvd pipelines (use with `medclipsvd train --pipeline NAME`)")
    for col in ("name", "suite", "dataset", "backbone", "protocol"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="fold")
    for p in rows:
        table.add_row(p.name, p.suite, p.dataset, p.backbone, p.protocol, p.description)
    Console().print(table)


def train(
    pipeline: str = typer.Option(..., "--pipeline", "-p", help="Pipeline name (see `medclipsvd pipelines`) or a pipeline YAML path."),
    data_root: Path = typer.Option(..., "--data-root", help="Folder holding the dataset (e.g. ../shared/data/biomedical, "
                                                          "which contains BUSI/); for `custom`, your class-folder tree or CSV."),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder: adapter/, results.json, plots/, checkpoint/."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Override the pipeline's backbone (e.g. tiny-biomedclip)."),
    shots: Optional[int] = typer.Option(None, "--shots", "-k", help="Training images per class (default: the pipeline's)."),
    seed: int = typer.Option(1, "--seed", help="Seed for the few-shot subset, data order, augmentation and init."),
    method: str = typer.Option("svd", "--method", help="svd (σ-only, default), zero_shot, linear_probe, lora or full."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="few_shot (default) or base2new (train on base classes, test base and new)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from <output>/checkpoint (same command line otherwise)."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Write a checkpoint every N steps (0: only at the end/on SIGTERM)."),
    reference_schedule: bool = typer.Option(False, "--reference-schedule", help="Reproduce the reference code's cosine "
                                            "(T_max = epochs, stepped per iteration) instead of one decay over the run."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override the learning rate of the configs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap the number of iterations (smoke tests)."),
    num_workers: int = typer.Option(0, "--num-workers", help="DataLoader worker processes."),
    allow_missing: bool = _allow_missing_opt,
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    tracking_uri: Optional[str] = _tracking_uri_opt,
    no_mlflow: bool = _no_mlflow_opt,
    register_model: bool = typer.Option(False, "--register", help="After training, register the run as a new "
                                        "version of the MLflow model --name (see `medclipsvd register`)."),
    model_name: Optional[str] = typer.Option(None, "--name", help="Registered model name for --register, e.g. chest-xray."),
    alias: Optional[str] = typer.Option(None, "--alias", help="With --register: alias for the new version, e.g. champion."),
    weights: Optional[str] = _weights_opt,
    text_dir: Optional[str] = _text_dir_opt,
    random_init: bool = _random_init_opt,
) -> None:
    """Adapt a backbone to a dataset with few-shot σ-only fine-tuning (or a baseline), then evaluate.

    Example: medclipsvd train --pipeline breast_ultrasound --data-root ../shared/data/biomedical
    --backbone tiny-biomedclip --shots 4 --seed 1 --output runs/busi-k4

    Under torchrun (several GPUs) the same command runs one DDP training; rank 0 logs and saves."""
    from medclipsvd.engine.distributed import init_distributed, shutdown_distributed
    from medclipsvd.engine.run import run_experiment, spec_from_pipeline

    if register_model:  # refuse before any work, not after training
        from medclipsvd.tracking.cli_support import check_register_options

        check_register_options(model_name, no_mlflow, method)
    dist = init_distributed(device)
    spec = spec_from_pipeline(
        pipeline, data_root=str(data_root), output=str(output), backbone=backbone, shots=shots, seed=seed,
        method=method, protocol=protocol, device=device, resume=resume, checkpoint_every=checkpoint_every,
        reference_schedule=reference_schedule, lr=lr, max_steps=max_steps, num_workers=num_workers,
        allow_missing=allow_missing, backbone_kwargs=_backbone_kwargs(weights, text_dir, random_init),
        progress=dist.is_main, volume=volume_kwargs(split_file, slices, window, axis, dicom_frames))
    tracker = _tracker(tracking_uri, no_mlflow) if dist.is_main else None
    if hasattr(tracker, "default_tags"):  # MLflow: tag runs with the pipeline they came from
        tracker.default_tags["pipeline"] = Path(pipeline).stem
    try:
        results = run_experiment(spec, tracker=tracker)
    finally:
        shutdown_distributed()
    if dist.is_main:
        _print_metrics(results, output)
        if register_model:
            from medclipsvd.tracking.cli_support import register_after_training

            register_after_training(tracker, model_name, alias, tracking_uri, log=typer.echo)


def evaluate(
    adapter: Path = typer.Option(..., "--adapter", "-a", help="Adapter folder written by `train` (<output>/adapter)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Dataset folder (default: the training run's)."),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p", help="Evaluate on this pipeline's dataset (default: the training run's)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone the adapter was trained on (default: the training run's)."),
    subsample: str = typer.Option("all", "--subsample", help="all, base or new classes (base-to-novel)."),
    split: str = typer.Option("test", "--split", help="test, val or train."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write evaluation.json and the plot (default: next to the adapter)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    allow_missing: bool = _allow_missing_opt,
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    tracking_uri: Optional[str] = _tracking_uri_opt,
    no_mlflow: bool = _no_mlflow_opt,
    weights: Optional[str] = _weights_opt,
    text_dir: Optional[str] = _text_dir_opt,
    random_init: bool = _random_init_opt,
) -> None:
    """Evaluate a saved adapter (weights merged, text features cached): accuracy, balanced accuracy,
    macro-F1, one-vs-rest AUROC, ECE, per-class accuracy, confusion matrix.

    Example: medclipsvd evaluate --adapter runs/busi-k4/adapter"""
    from medclipsvd.engine.run import evaluate_adapter
    from medclipsvd.tracking.cli_support import tracked_evaluation

    tracker = _tracker(tracking_uri, no_mlflow)  # before any work: a dead server stops us here
    results, out = tracked_evaluation(tracker, str(adapter), lambda: evaluate_adapter(
        str(adapter), data_root=None if data_root is None else str(data_root), pipeline=pipeline,
        backbone=backbone, subsample=subsample, split=split, output=None if output is None else str(output),
        device=device, allow_missing=allow_missing, backbone_kwargs=_backbone_kwargs(weights, text_dir, random_init),
        volume=volume_kwargs(split_file, slices, window, axis, dicom_frames)))
    _print_metrics(results, None)
    typer.echo(f"written: {out}")


def benchmark(
    suite: str = typer.Option(..., "--suite", help="biomedical, natural, or dataset names separated by commas (BUSI,CTKidney)."),
    protocol: str = typer.Option("few_shot", "--protocol", help="few_shot, base2new, cross_dataset or domain_generalization."),
    shots: str = typer.Option("1,2,4,8,16", "--shots", help="Comma-separated K (base2new/cross-dataset/DG use 16)."),
    seeds: str = typer.Option("1,2,3", "--seeds", help="Comma-separated seeds."),
    method: str = typer.Option("svd", "--method", help="Comma-separated: svd, zero_shot, linear_probe, lora, full."),
    data_root: Path = typer.Option(..., "--data-root", help="Folder holding the datasets (e.g. ../shared/data/biomedical)."),
    output: Path = typer.Option(..., "--output", "-o", help="Benchmark folder: runs/... per run, tables/ with Markdown, CSV, plots."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Override the configs' backbone (biomedclip / clip-vit-b16)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    shard: str = typer.Option("0/1", "--shard", help="i/n: run only every n-th run starting at i (0 <= i < n), "
                                                      "to split the benchmark over processes or machines."),
    reference_schedule: bool = typer.Option(False, "--reference-schedule", help="The reference code's learning-rate sequence."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap iterations per run (smoke tests)."),
    allow_missing: bool = _allow_missing_opt,
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    tracking_uri: Optional[str] = _tracking_uri_opt,
    no_mlflow: bool = _no_mlflow_opt,
    weights: Optional[str] = _weights_opt,
    text_dir: Optional[str] = _text_dir_opt,
    random_init: bool = _random_init_opt,
) -> None:
    """Reproduce the paper's tables: every (dataset, K, seed, method) run, then the aggregated table
    (mean over seeds, average over datasets; base/new/HM) as Markdown and CSV, and accuracy-vs-K plots.
    Runs with results are skipped, so an interrupted benchmark continues where it stopped.

    Example: medclipsvd benchmark --suite BUSI --protocol few_shot --shots 1,2 --seeds 1,2
    --method svd,zero_shot,linear_probe,lora --backbone tiny-biomedclip --data-root ../shared/data/biomedical
    --output bench/"""
    from medclipsvd.protocols.harness import BenchmarkSpec, parse_int_list, parse_shard, run_benchmark

    bench = BenchmarkSpec(suite=suite, protocol=protocol, shots=parse_int_list(shots, "--shots"),
                          seeds=parse_int_list(seeds, "--seeds"),
                          methods=[m.strip() for m in method.split(",") if m.strip()], backbone=backbone,
                          data_root=str(data_root), output=str(output), device=device,
                          reference_schedule=reference_schedule, max_steps=max_steps, shard=parse_shard(shard),
                          backbone_kwargs=_backbone_kwargs(weights, text_dir, random_init),
                          allow_missing=allow_missing,
                          volume=volume_kwargs(split_file, slices, window, axis, dicom_frames))
    from medclipsvd.tracking.cli_support import benchmark_parent

    tracker = _tracker(tracking_uri, no_mlflow)
    report = benchmark_parent(tracker, bench, lambda: run_benchmark(bench, tracker=tracker, log=typer.echo))
    typer.echo(f"{report['ran']} run(s) done, {report['skipped']} skipped (had results), "
               f"{report['this_shard']} in this shard of {report['planned']}")
    if report["tables"].get("markdown"):
        typer.echo("")
        typer.echo(Path(report["tables"]["markdown"]).read_text())
        for key, path in report["tables"].items():
            typer.echo(f"{key}: {path}")


def demo(
    output: Path = typer.Option(Path("medclipsvd-demo"), "--output", "-o", help="Folder for the synthetic data and the run."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """The whole flow offline in about a minute on a CPU: writes a small synthetic DICOM + PNG dataset
    (fake patients), adapts tiny-biomedclip (random weights) by σ-only fine-tuning, evaluates it, and prints
    the metrics and where the outputs are. Numbers measure the plumbing, not medical performance."""
    from medclipsvd.engine.demo import run_demo

    results, out = run_demo(str(output), device=device, log=typer.echo)
    _print_metrics(results, Path(out))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("benchmark")(benchmark)
    app.command("demo")(demo)
    app.command("pipelines")(pipelines)
