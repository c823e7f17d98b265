"""`medclipsvd train | evaluate | benchmark | demo | pipelines`: thin wrappers over medclipsvd.engine
and medclipsvd.protocols (heavy imports happen inside the commands so `--help` stays fast)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medclipsvd.cli.hospital_options import (axis_opt, dicom_frames_opt, input_flags, modality_opt, on_bad_series_opt,
                                             series_opt, slices_opt, split_file_opt, window_opt)
from medclipsvd.cli import options as opt

_weights_opt = opt.weights()
_text_dir_opt = opt.text_dir()
_random_init_opt = opt.random_init()
_allow_missing_opt = opt.allow_missing()
_tracking_uri_opt = opt.tracking_uri()
_no_mlflow_opt = opt.no_mlflow()
_no_system_metrics_opt = opt.no_system_metrics()
_device_opt = opt.device()
_precision_opt = opt.precision()
_follow_symlinks_opt = typer.Option(False, "--follow-symlinks", help="Allow dataset entries that are symlinks "
                                    "leading outside the data root (refused by default).")
_MODE_HELP = ("parity: the reference implementation exactly (oscillating LR, flips on every dataset, base2new "
              "draws over all classes, fp16 training, ddof-0 std); improved: medclipsvd's fixes "
              "(docs/training.md, Modes).")
_cache_dir_opt = typer.Option(None, "--cache-dir", help="Preprocessed evaluation cache: test images decoded and resized once, reused by later runs (default: $MEDCLIPSVD_CACHE/eval or ~/.cache/medclipsvd/eval; 'off' to decode every time).")


def _backbone_kwargs(weights, text_dir, random_init) -> dict:
    kw = {}
    if weights:
        kw["weights"] = weights
    if text_dir:
        kw["text_dir"] = text_dir
    if random_init:
        kw["random_init"] = True
    return kw


def _tracker(tracking_uri: Optional[str], no_mlflow: bool, system_metrics: bool = True):
    """MLflow when medclipsvd.tracking.make_tracker exists and tracking is on; otherwise no tracking."""
    from medclipsvd import tracking
    from medclipsvd.tracking import NullTracker

    make = getattr(tracking, "make_tracker", None)
    if make is None:
        if tracking_uri and not no_mlflow:
            typer.secho("note: MLflow tracking is not available in this installation; results stay on disk",
                        err=True, fg=typer.colors.YELLOW)
        return NullTracker()
    return make(tracking_uri, not no_mlflow, system_metrics=system_metrics)


def _print_metrics(results: dict, out: Path | None) -> None:
    from rich.console import Console

    from medclipsvd.engine.report import metrics_tables

    console = Console()
    for table in metrics_tables(results):
        console.print(table)
    if "hm" in results.get("summary", {}):
        console.print(f"harmonic mean of base and new: {results['summary']['hm']:.2f}")
    if out is not None:  # the path on a line of its own: rich would otherwise break it anywhere
        console.print("outputs (results.json, adapter/, plots/):")
        typer.echo(f"  {out}")


# ---------------------------------------------------------------------------------------------
def pipelines(json_out: bool = typer.Option(False, "--json", help="One JSON object per pipeline.")) -> None:
    """List the pipelines (pipelines/*.yaml) and what each is for.

    Shows name, dataset, backbone and protocol; use one with `medclipsvd train --pipeline NAME`."""
    from medclipsvd.engine.config import list_pipelines, load_pipeline

    rows = [load_pipeline(n) for n in list_pipelines()]
    if json_out:
        for p in rows:
            typer.echo(p.model_dump_json())
        return
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    # Two columns so that the table stays readable in an 80-column terminal: the details fold under the name.
    table = Table(title="medclipsvd pipelines (use with `medclipsvd train --pipeline NAME`)")
    table.add_column("name", no_wrap=True)
    table.add_column("dataset · backbone · protocol (suite) · description", overflow="fold")
    for p in rows:
        table.add_row(p.name, f"[bold]{escape(p.dataset)}[/] · {p.backbone} · {p.protocol} ({p.suite})\n"
                              f"[dim]{escape(p.description)}[/]")
    Console().print(table)


def train(
    pipeline: str = typer.Option(..., "--pipeline", "-p", help="Pipeline name (see `medclipsvd pipelines`) or a pipeline YAML path."),
    data_root: Path = opt.data_root("Folder holding the dataset (e.g. ../shared/data/biomedical, which contains "
                                    "BUSI/); for `custom`, your class-folder tree or CSV.", required=True),
    output: Path = opt.output("Run folder: adapter/, results.json, plots/, checkpoint/.", required=True),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Override the pipeline's backbone (e.g. tiny-biomedclip)."),
    shots: Optional[int] = typer.Option(None, "--shots", "-k", help="Training images per class (default: the pipeline's)."),
    seed: int = opt.seed(),
    method: str = typer.Option("svd", "--method", help="svd (σ-only, default), zero_shot, linear_probe, lora or full."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="few_shot (default) or base2new (train on base classes, test base and new)."),
    device: str = _device_opt,
    precision: str = _precision_opt,
    resume: bool = typer.Option(False, "--resume", help="Continue from <output>/checkpoint (same command line otherwise)."),
    force: bool = opt.force("Train into an --output that already holds a run (results.json, adapter/, "
                            "checkpoint/), replacing it; refused otherwise. To continue an interrupted run, use "
                            "--resume instead."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Write a checkpoint every N steps (0: only at the end/on SIGTERM)."),
    mode: str = typer.Option("improved", "--mode", help=_MODE_HELP),
    reference_schedule: bool = typer.Option(False, "--reference-schedule", help="Shorthand: only parity's learning-rate "
                                            "schedule (T_max = epochs, stepped per iteration) in improved mode."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override the learning rate of the configs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap the number of iterations (smoke tests)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="DataLoader worker processes "
                                              "(default: one per core up to 8 on CUDA, 0 on CPU)."),
    allow_missing: bool = _allow_missing_opt,
    follow_symlinks: bool = _follow_symlinks_opt,
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    series: Optional[list[str]] = series_opt,
    on_bad_series: Optional[str] = on_bad_series_opt,
    modality: Optional[str] = modality_opt,
    tracking_uri: Optional[str] = _tracking_uri_opt,
    no_mlflow: bool = _no_mlflow_opt,
    no_system_metrics: bool = _no_system_metrics_opt,
    register_model: bool = typer.Option(False, "--register", help="After training, register the run as a new "
                                        "version of the MLflow model --name (see `medclipsvd register`)."),
    model_name: Optional[str] = typer.Option(None, "--name", help="Registered model name for --register, e.g. chest-xray."),
    alias: Optional[str] = typer.Option(None, "--alias", help="With --register: alias for the new version, e.g. champion."),
    weights: Optional[str] = _weights_opt,
    text_dir: Optional[str] = _text_dir_opt,
    random_init: bool = _random_init_opt,
    cache_dir: Optional[str] = _cache_dir_opt,
) -> None:
    """Few-shot σ-only fine-tuning of a backbone, then evaluation.

    --method picks σ-only (svd) or a baseline. Writes adapter/, results.json and plots/ to --output; with MLflow on, the run records its parameters,
    metrics, dataset inputs and system metrics, and the trained model as an MLflow model.
    Under torchrun (several GPUs) the same command runs one DDP training; rank 0 logs and saves.

    Examples (the second on hospital CT studies split by `medclipsvd data split`):

      medclipsvd train --pipeline breast_ultrasound \\
        --data-root ../shared/data/biomedical --backbone tiny-biomedclip \\
        --shots 4 --seed 1 --output runs/busi-k4
      medclipsvd train --pipeline ct_study_folder --data-root hospital/ct \\
        --split-file ct-split.json --backbone tiny-biomedclip --output runs/ct"""
    from medclipsvd.engine.distributed import init_distributed, shutdown_distributed
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.run import run_experiment

    from medclipsvd.engine.modes import mode_settings

    mode_settings(mode)  # an unknown --mode fails before any work
    if register_model:  # refuse before any work, not after training
        from medclipsvd.tracking.cli_support import check_register_options

        check_register_options(model_name, no_mlflow, method, alias)
    dist = init_distributed(device)
    spec = spec_from_pipeline(
        pipeline, data_root=str(data_root), output=str(output), backbone=backbone, shots=shots, seed=seed,
        method=method, protocol=protocol, device=device, resume=resume, checkpoint_every=checkpoint_every,
        mode=mode, reference_schedule=reference_schedule, lr=lr, max_steps=max_steps, num_workers=num_workers,
        allow_missing=allow_missing, backbone_kwargs=_backbone_kwargs(weights, text_dir, random_init),
        progress=dist.is_main, follow_symlinks=follow_symlinks, cache_dir=cache_dir, force=force,
        precision=precision,
        volume=input_flags(split_file, slices, window, axis, dicom_frames, modality, series,
                           on_bad_series).load_kwargs())
    tracker = _tracker(tracking_uri, no_mlflow, not no_system_metrics) if dist.is_main else None
    if hasattr(tracker, "default_tags"):  # MLflow: tag runs with the pipeline they came from
        tracker.default_tags["pipeline"] = Path(pipeline).stem
    try:
        results = run_experiment(spec, tracker=tracker)
    finally:
        shutdown_distributed()
    if dist.is_main:
        _print_metrics(results, output)
        from medclipsvd.tracking.cli_support import log_model_after_training

        log_model_after_training(tracker, method, log=typer.echo, output=str(output),
                                 name=model_name if register_model else None)
        if register_model:
            from medclipsvd.tracking.cli_support import register_after_training

            register_after_training(tracker, model_name, alias, tracking_uri, log=typer.echo)


def evaluate(
    adapter: Path = typer.Option(..., "--adapter", "-a", help="Adapter folder written by `train` (<output>/adapter)."),
    data_root: Optional[Path] = opt.data_root("Dataset folder (default: the training run's)."),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p", help="Evaluate on this pipeline's dataset (default: the training run's)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone the adapter was trained on (default: the training run's)."),
    subsample: str = typer.Option("all", "--subsample", help="all, base or new classes (base-to-novel)."),
    split: str = typer.Option("test", "--split", help="test, val or train."),
    output: Optional[Path] = opt.output("Where to write evaluation.json and the plot (default: next to the adapter)."),
    force: bool = opt.force("Replace an evaluation.json already in --output (refused otherwise)."),
    device: str = _device_opt,
    precision: str = _precision_opt,
    allow_missing: bool = _allow_missing_opt,
    follow_symlinks: bool = _follow_symlinks_opt,
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
    cache_dir: Optional[str] = _cache_dir_opt,
) -> None:
    """Evaluate a saved adapter on a dataset split.

    Reports accuracy, balanced accuracy, macro-F1, one-vs-rest AUROC, ECE, per-class accuracy and the
    confusion matrix (weights merged, text features cached).

    Example:

      medclipsvd evaluate --adapter runs/busi-k4/adapter"""
    from medclipsvd.engine.adapter_evaluation import evaluate_adapter
    from medclipsvd.tracking.cli_support import tracked_evaluation

    tracker = _tracker(tracking_uri, no_mlflow)  # before any work: a dead server stops us here
    results, out = tracked_evaluation(tracker, str(adapter), lambda: evaluate_adapter(
        str(adapter), data_root=None if data_root is None else str(data_root), pipeline=pipeline,
        backbone=backbone, subsample=subsample, split=split, output=None if output is None else str(output),
        device=device, allow_missing=allow_missing, backbone_kwargs=_backbone_kwargs(weights, text_dir, random_init),
        follow_symlinks=follow_symlinks, cache_dir=cache_dir, force=force, precision=precision,
        volume=input_flags(split_file, slices, window, axis, dicom_frames).load_kwargs()))
    _print_metrics(results, None)
    typer.echo(f"written: {out}")


def benchmark(
    suite: str = typer.Option(..., "--suite", help="biomedical, natural, or dataset names separated by commas (BUSI,CTKidney)."),
    protocol: str = typer.Option("few_shot", "--protocol", help="few_shot, base2new, cross_dataset or domain_generalization."),
    shots: str = typer.Option("1,2,4,8,16", "--shots", help="Comma-separated K (base2new/cross-dataset/DG use 16)."),
    seeds: str = typer.Option("1,2,3", "--seeds", help="Comma-separated seeds."),
    method: str = typer.Option("svd", "--method", help="Comma-separated: svd, zero_shot, linear_probe, lora, full."),
    data_root: Path = opt.data_root("Folder holding the datasets (e.g. ../shared/data/biomedical).", required=True),
    output: Path = opt.output("Benchmark folder: runs/... per run, tables/ with Markdown, CSV, plots.", required=True),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Override the configs' backbone (biomedclip / clip-vit-b16)."),
    device: str = _device_opt,
    precision: str = _precision_opt,
    shard: str = typer.Option("0/1", "--shard", help="i/n: run only every n-th run starting at i (0 <= i < n), "
                                                      "to split the benchmark over processes or machines."),
    mode: str = typer.Option("parity", "--mode", help=_MODE_HELP + " Default parity: the paper's tables."),
    reference_schedule: bool = typer.Option(False, "--reference-schedule", help="Shorthand: only parity's learning-rate "
                                            "schedule, with --mode improved."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap iterations per run (smoke tests)."),
    resume: bool = typer.Option(False, "--resume", help="Continue runs that were interrupted (SIGTERM/Ctrl-C) "
                                "from their checkpoints instead of restarting them (same options otherwise)."),
    allow_missing: bool = _allow_missing_opt,
    follow_symlinks: bool = _follow_symlinks_opt,
    split_file: Optional[Path] = split_file_opt,
    slices: Optional[str] = slices_opt,
    window: Optional[str] = window_opt,
    axis: Optional[str] = axis_opt,
    dicom_frames: Optional[str] = dicom_frames_opt,
    modality: Optional[str] = modality_opt,
    tracking_uri: Optional[str] = _tracking_uri_opt,
    no_mlflow: bool = _no_mlflow_opt,
    no_system_metrics: bool = _no_system_metrics_opt,
    weights: Optional[str] = _weights_opt,
    text_dir: Optional[str] = _text_dir_opt,
    random_init: bool = _random_init_opt,
    cache_dir: Optional[str] = _cache_dir_opt,
    executor: str = typer.Option("local", "--executor", help="local (one run after another in this process) or "
                                 "ray (each run a Ray task; needs `pip install 'medclipsvd[ray]'` and, for tracking, "
                                 "an MLflow server via --tracking-uri http://...)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (auto, HOST:6379, "
                                          "ray://HOST:10001); default: RAY_ADDRESS, else a local cluster."),
    gpus_per_run: Optional[float] = typer.Option(None, "--gpus-per-run", help="Ray: GPUs per run; a fraction packs "
                                                 "runs on one GPU (default 0.25 on GPU clusters, else 0)."),
    cpus_per_run: Optional[float] = typer.Option(None, "--cpus-per-run", help="Ray: CPUs per run (default 1, or 4 "
                                                 "per GPU run to feed it)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="DataLoader worker processes per run "
                                              "(default: one per core up to 8 on CUDA, 0 on CPU)."),
) -> None:
    """Reproduce the paper's tables: every dataset, K, seed and method.

    Runs every (dataset, K, seed, method), then writes the aggregated table (mean over seeds, average over
    datasets; base/new/HM) as Markdown and CSV, and accuracy-vs-K plots. Runs with results are skipped, so
    an interrupted benchmark continues where it stopped; with --resume the run that was interrupted
    continues from its checkpoint too.

    Example:

      medclipsvd benchmark --suite BUSI --protocol few_shot \\
        --shots 1,2 --seeds 1 --method svd,zero_shot \\
        --backbone tiny-biomedclip --data-root ../shared/data/biomedical \\
        --output bench/

    Add `--executor ray` to run the runs as Ray tasks (local cluster, or --address); `--shard i/n` splits
    the runs over independent jobs (e.g. a Slurm job array, see docs/training.md)."""
    from medclipsvd.protocols.executors import make_executor
    from medclipsvd.protocols.harness import BenchmarkSpec, parse_int_list, parse_shard, run_benchmark

    runner = make_executor(executor, address=address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
                           tracking_uri=tracking_uri, tracking_enabled=not no_mlflow)

    bench = BenchmarkSpec(suite=suite, protocol=protocol, shots=parse_int_list(shots, "--shots"),
                          seeds=parse_int_list(seeds, "--seeds"),
                          methods=[m.strip() for m in method.split(",") if m.strip()], backbone=backbone,
                          data_root=str(data_root), output=str(output), device=device, mode=mode,
                          reference_schedule=reference_schedule, max_steps=max_steps, shard=parse_shard(shard),
                          backbone_kwargs=_backbone_kwargs(weights, text_dir, random_init),
                          allow_missing=allow_missing, follow_symlinks=follow_symlinks, resume=resume,
                          cache_dir=cache_dir, num_workers=num_workers, precision=precision,
                          **input_flags(split_file, slices, window, axis, dicom_frames, modality).load_kwargs())
    bench.validate()  # options refused before an MLflow parent run or any run starts
    if executor == "local":  # Ray workers decide on their own machines (each run refuses what it cannot run)
        from medclipsvd.engine.steps import run_precision

        run_precision(bench.base)
    from medclipsvd.tracking.cli_support import benchmark_parent

    tracker = _tracker(tracking_uri, no_mlflow, not no_system_metrics)
    report = benchmark_parent(tracker, bench, lambda: run_benchmark(bench, tracker=tracker, log=typer.echo,
                                                                          executor=runner))
    typer.echo(f"{report['ran']} run(s) done, {report['skipped']} skipped (had results), "
               f"{report['this_shard']} in this shard of {report['planned']}")
    if report["tables"].get("markdown"):
        typer.echo("")
        typer.echo(Path(report["tables"]["markdown"]).read_text())
        for key, path in report["tables"].items():
            typer.echo(f"{key}: {path}")


def demo(
    output: Path = opt.output("Folder for the synthetic data and the run.", default=Path("medclipsvd-demo")),
    device: str = _device_opt,
    seed: int = opt.seed(),
) -> None:
    """The whole flow offline on synthetic data, in about a minute.

    Runs on a CPU. Writes a small synthetic DICOM + PNG dataset (fake patients), adapts tiny-biomedclip (random weights) by
    σ-only fine-tuning, evaluates it, and prints the metrics, where the outputs are and what to try next.
    The accuracy measures the plumbing, not medical performance.

    Example:

      medclipsvd demo --output medclipsvd-demo"""
    from medclipsvd.engine.demo import run_demo

    results, out = run_demo(str(output), device=device, log=typer.echo, seed=seed)
    _print_metrics(results, Path(out))
    typer.echo(demo_epilogue(Path(out)))


def demo_epilogue(run_dir: Path) -> str:
    """What the demo's numbers mean and the commands to try next: prose within 80 columns, each command
    copyable, one option per line with `\\` continuations so that a long path folds on a line of its own."""
    adapter = run_dir / "adapter"

    def command(*parts: str) -> list[str]:
        return [f"  {parts[0]} \\", *(f"      {p} \\" for p in parts[1:-1]), f"      {parts[-1]}"]

    return "\n".join([
        "",
        "These numbers measure the plumbing, not medical performance: the data are",
        "synthetic images and the model is a tiny backbone with random weights. Real",
        "accuracy needs real data and pretrained weights (see `medclipsvd pipelines`",
        "and docs/).",
        "",
        "Next, try:",
        *command("medclipsvd evaluate", f"--adapter {adapter}", "--no-mlflow"),
        *command("medclipsvd interpret", f"--adapter {adapter}", f"--images {run_dir.parent / 'data'}", "--no-mlflow"),
        *command("medclipsvd train --pipeline breast_ultrasound", "--data-root DATA_ROOT", "--output runs/busi"),
    ])


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("benchmark")(benchmark)
    app.command("demo")(demo)
    app.command("pipelines")(pipelines)
