"""`medclipsvd evaluate`: a saved adapter on a dataset split. Settings it is not given come from the
training run's results.json beside the adapter; writes evaluation.json and plots."""
from __future__ import annotations

from pathlib import Path

from medclipsvd.data.volumes.policy import InputPolicy
from medclipsvd.engine.config import HParams
from medclipsvd.engine.evaluator import write_results
from medclipsvd.engine.metrics import classification_metrics, with_study_metrics
from medclipsvd.engine.modes import results_mode
from medclipsvd.engine.plots import plot_evaluation, plot_title
from medclipsvd.engine.run_folder import RESULTS_FILE, OutputExistsError, read_run_settings
from medclipsvd.engine.spec import RunSpec
from medclipsvd.engine.steps import (SplitsProvider, data_package, default_provider, load_kwargs, predict,
                                     run_precision, transforms_for)
from medclipsvd.errors import MedClipSVDError


def _require_split(samples: list, split: str, dataset: str, data_root) -> None:
    if not samples:
        raise MedClipSVDError(f"{dataset}: its {split} split has no usable images under {data_root}; there is "
                              f"nothing to evaluate - choose another --split (`medclipsvd data check` counts them).")


def evaluate_adapter(adapter: str, *, data_root: str | None = None, pipeline: str | None = None,
                     backbone: str | None = None, subsample: str = "all", split: str = "test",
                     output: str | None = None, device: str = "auto", allow_missing: bool = False,
                     backbone_kwargs: dict | None = None, provider: SplitsProvider | None = None,
                     follow_symlinks: bool = False, cache_dir: str | None = None,
                     volume: dict | None = None, force: bool = False,
                     precision: str = "auto") -> tuple[dict, Path]:
    """Evaluate a saved adapter. Missing settings come from the training run's results.json next to it.

    ``volume``: split_file / slices / window / axis / dicom_frames; a key that is absent (or None for
    split_file) falls back to the training run's value, then to the default. An earlier evaluation.json in
    the output folder is replaced only with ``force``. ``precision``: as `--precision` (medclipsvd/device.py);
    evaluation.json records what ran."""
    from medclipsvd.backbones import load_backbone
    from medclipsvd.engine.config import load_pipeline
    from medclipsvd.methods.registry import load_merged

    adapter_dir = Path(adapter)
    if not adapter_dir.is_dir():
        raise MedClipSVDError(f"adapter folder {adapter_dir} does not exist; pass the adapter/ folder that "
                              "`medclipsvd train` wrote under its --output")
    out = Path(output) if output else adapter_dir.parent / "evaluation"
    if not force and (out / "evaluation.json").exists():  # before any work, not after the evaluation
        raise OutputExistsError(f"--output {out} already holds an evaluation ({out / 'evaluation.json'}); pass "
                                "--force to replace it, or choose another --output")
    run_file = adapter_dir.parent / RESULTS_FILE
    run = read_run_settings(run_file)
    plan = run_precision(RunSpec(dataset="", hp=HParams(), device=device, mode=results_mode(run),
                                 precision=precision))  # refused before any data or model is read
    if pipeline:
        p = load_pipeline(pipeline)
        dataset, template = p.dataset, p.method_hparams(run.get("protocol", p.protocol)).template
        backbone = backbone or run.get("backbone") or p.backbone
    else:
        dataset, template = run.get("dataset"), run.get("template")
        backbone = backbone or run.get("backbone")
    data_root = data_root or run.get("data_root")
    missing = [n for n, v in (("--pipeline", dataset), ("--data-root", data_root), ("--backbone", backbone))
               if not v]
    if missing:
        raise MedClipSVDError(f"no training results.json next to {adapter_dir} to read the settings from; "
                              f"pass {', '.join(missing)}")
    if split not in ("train", "val", "test"):
        raise MedClipSVDError(f"--split must be train, val or test, got {split!r}")
    kw = dict(run.get("backbone_kwargs", {}))
    kw.update(backbone_kwargs or {})
    policy = {**RunSpec(dataset="", hp=HParams()).input_policy(),
              **InputPolicy.from_run(run).to_dict(), **({"split_file": run["split_file"]} if "split_file" in run else {}),
              **{k: v for k, v in (volume or {}).items() if v is not None}}
    if policy.get("window") == "auto":
        policy["window"] = None
    provider = provider or default_provider(allow_missing or bool(run.get("allow_missing")), follow_symlinks,
                                            load_kwargs(policy))
    splits = provider(dataset, data_root)
    if subsample != "all":
        splits = data_package().split_base_new(splits, subsample)
    elif run.get("protocol") == "base2new":
        splits = data_package().split_base_new(splits, "base")  # what the adapter was trained on
    _require_split(splits.split(split), split, dataset, data_root)  # before any model is built
    bb = load_backbone(backbone, **kw)
    bb.fingerprint()
    method = load_merged(bb, adapter_dir)
    preprocess = [s.model_dump() for s in p.preprocess] if pipeline else run.get("preprocess", [])
    source = p.source if pipeline else (str(run_file) if preprocess else None)
    spec = RunSpec(dataset=dataset, hp=HParams(), device=device, mode=results_mode(run), preprocess=preprocess,
                   preprocess_source=source, precision=precision)
    _, eval_tf = transforms_for(spec, bb, dataset)
    from medclipsvd.data.checks import drop_undecodable

    kept, dropped = drop_undecodable({split: getattr(splits, split)}, allow_missing or bool(run.get("allow_missing")),
                                     dataset)
    from medclipsvd.data.eval_cache import eval_dataset

    samples = kept[split]
    _require_split(samples, split, dataset, data_root)
    ds = eval_dataset(samples, eval_tf, cache_dir)
    probs, labels = predict(spec, plan, bb, ds, splits.classnames, template)
    metrics = with_study_metrics(classification_metrics(probs, labels, list(splits.classnames),
                                                        ci_seed=int(run.get("seed") or 0)),
                                 probs, labels, samples, list(splits.classnames))
    results = {"adapter": str(adapter_dir), "method": method, "mode": spec.mode, "dataset": dataset, "backbone": backbone,
               "template": template, "split": split, "subsample": subsample, "shots": run.get("shots"),
               "seed": run.get("seed"), "eval": {split: metrics}, "summary": {split: metrics["accuracy"]},
               "dropped_undecodable": {k: n for k, n in dropped.items() if n},
               "input": {k: v for k, v in policy.items()}, "precision": plan.record()}
    from medclipsvd.io import output_lock

    with output_lock(out, what="evaluate"):
        write_results(out / "evaluation.json", results)
        plot_evaluation(probs, labels, metrics, list(splits.classnames), out, split,
                        title=plot_title(source if pipeline else None, dataset, split, method, spec.mode),
                        studies=[s.study for s in samples])
    return results, out / "evaluation.json"
