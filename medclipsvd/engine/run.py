"""Running one training run end to end: data -> few-shot subset -> backbone -> method -> train -> save ->
merge -> evaluate -> results JSON + plots (+ tracking). Used by `medclipsvd train`, the benchmark protocols,
`medclipsvd demo` and the notebook API. The run is defined by a `RunSpec` (engine/spec.py); evaluating a
saved adapter later is engine/adapter_evaluation.py."""
from __future__ import annotations

import time
from pathlib import Path

from medclipsvd.engine.distributed import dist_info
from medclipsvd.engine.evaluator import fit_linear_probe, image_features, probe_probs, write_results
from medclipsvd.engine.metrics import classification_metrics, study_metric_names, with_study_metrics
from medclipsvd.engine.modes import base2new_few_shot, mode_settings
from medclipsvd.engine.plots import plot_evaluation, plot_title, plot_training_curve
from medclipsvd.engine.run_folder import RESULTS_FILE, check_run_folder
from medclipsvd.engine.spec import RunSpec
from medclipsvd.engine.steps import (SplitsProvider, data_package, default_provider, eval_set, hflip_for,
                                     load_backbone_for, load_kwargs, predict, run_precision, seed_everything,
                                     transforms_for)
from medclipsvd.engine.tracker import NullTracker, Tracker
from medclipsvd.engine.trainer import TrainSettings, resolve_device, train
from medclipsvd.errors import MedClipSVDError
from medclipsvd.methods.registry import METHODS, prepare_method


def _few_shot(splits, k: int, seed: int):
    return data_package().sample_few_shot(splits, k, seed)


def _fit_and_evaluate(spec: RunSpec, backbone, train_splits, eval_sets: dict[str, tuple[object, list[str]]],
                      template: str, out: Path, tracker: Tracker, train_dataset_name: str, plan) -> dict:
    """Train `spec.method` on train_splits (already few-shot), evaluate on each eval set
    {label: (list of Sample, classnames)}, each phase in the precision `plan` (`run_precision`) gives.
    Returns the results dict (also written to out/results.json)."""
    data = data_package()
    dist = dist_info()
    mode = mode_settings(spec.mode)
    seed_everything(spec.seed)
    train_tf, eval_tf = transforms_for(spec, backbone, train_dataset_name)
    results: dict = {"spec": spec.params(), "template": template, "method": spec.method, "mode": spec.mode,
                     "hflip": hflip_for(spec, train_dataset_name),
                     "n_train": len(train_splits.train), "classnames": list(train_splits.classnames),
                     "precision": plan.record()}
    prepared = prepare_method(spec.method, backbone, spec.hp, spec.lr)
    t0 = time.perf_counter()
    probe = None
    if prepared is not None:
        reference_schedule = spec.reference_schedule or mode.reference_schedule
        total = spec.hp.total_iterations(len(train_splits.train), spec.shots)
        t_max = spec.hp.scheduler_t_max(total, reference_schedule)
        if spec.max_steps is not None:
            total = min(total, spec.max_steps)
            t_max = min(t_max, total) if not reference_schedule else t_max
        settings = TrainSettings(
            lr=prepared.lr, total_steps=total, t_max=t_max, weight_decay=spec.hp.weight_decay,
            eta_min=spec.hp.eta_min, batch_size=spec.hp.batch_size, seed=spec.seed, device=spec.device,
            checkpoint_every=spec.checkpoint_every, checkpoint_dir=str(out / "checkpoint"), resume=spec.resume,
            num_workers=spec.num_workers, progress=spec.progress, amp=plan.train)
        train_set = data.ImageDataset(train_splits.train, train_tf, cache=True)
        res = train(backbone, prepared.params, train_set, list(train_splits.classnames), template, settings,
                    text_trainable=prepared.text_trainable, tracker=tracker)
        results["train"] = {"steps": res.steps, "t_max": t_max, "reference_schedule": reference_schedule,
                            "amp": plan.train, "lr": prepared.lr, "final_loss": res.final_loss,
                            "seconds": round(res.seconds, 3), "images_per_second": round(res.images_per_second, 2),
                            "trainable_parameters": prepared.n_trainable, "text_trainable": prepared.text_trainable,
                            "resumed": bool(spec.resume), "losses": res.losses, "lrs": res.lrs}
        if dist.is_main:
            prepared.save(out / "adapter")
        if dist.is_main and spec.plots:
            plot_training_curve(res.losses, res.lrs, out / "plots" / "training_curve.png")
        prepared.merge()
    elif spec.method == "linear_probe":
        dev = resolve_device(spec.device)
        backbone.to(dev).eval()
        ftr, ytr = image_features(backbone, eval_set(spec, train_splits.train, eval_tf), dev, spec.eval_batch_size,
                                  amp=plan.eval_image)
        fval, yval = (image_features(backbone, eval_set(spec, train_splits.val, eval_tf), dev,
                                     spec.eval_batch_size, amp=plan.eval_image) if train_splits.val else (None, None))
        probe = fit_linear_probe(ftr.numpy(), ytr.numpy(), None if fval is None else fval.numpy(),
                                 None if yval is None else yval.numpy(), spec.seed)
        results["train"] = {"probe_C": float(getattr(probe, "C", 1.0)), "n_features": int(ftr.shape[1])}
    results["train_seconds"] = round(time.perf_counter() - t0, 3)

    if not dist.is_main:
        return results
    results["eval"] = {}
    for label, (samples, classnames) in eval_sets.items():
        ds = eval_set(spec, samples, eval_tf)
        if probe is not None:
            if list(classnames) != list(train_splits.classnames):
                results["eval"][label] = {"skipped": "a linear probe cannot classify classes it was not trained on"}
                continue
            dev = resolve_device(spec.device)
            f, y = image_features(backbone, ds, dev, spec.eval_batch_size, spec.num_workers, amp=plan.eval_image)
            probs, labels = probe_probs(probe, f.numpy(), len(classnames)), y.numpy()
        else:
            probs, labels = predict(spec, plan, backbone, ds, classnames, template, spec.progress)
        metrics = with_study_metrics(classification_metrics(probs, labels, list(classnames), ci_seed=spec.seed),
                                     probs, labels, samples, list(classnames))
        results["eval"][label] = metrics
        if spec.plots:
            plot_evaluation(probs, labels, metrics, list(classnames), out / "plots", label,
                            title=plot_title(spec.preprocess_source, spec.dataset, label, spec.method, spec.mode),
                            studies=[s.study for s in samples])
    return results


def _decodable(spec: RunSpec, few, eval_sets: dict):
    """Decode-check the images this run will read (the few-shot subset and the evaluation sets) before
    training: the data load checked headers only, and a truncated file would otherwise stop the run after
    training. Undecodable images are an error naming the first, or with --allow-missing dropped and counted,
    as `data check` does. Then what is left must be trainable and scorable (``sanity.check_run_data``): no
    class without a training image, no empty evaluation set."""
    from medclipsvd.data.checks import drop_undecodable
    from medclipsvd.data.sanity import check_run_data

    groups = {"train": few.train, "val": few.val, **{f"eval:{k}": v[0] for k, v in eval_sets.items()}}
    kept, dropped = drop_undecodable(groups, spec.allow_missing, spec.dataset)
    if any(dropped.values()):
        few = few.replace(train=kept["train"], val=kept["val"])
        eval_sets = {k: (kept[f"eval:{k}"], v[1]) for k, v in eval_sets.items()}
    check_run_data(few, eval_sets, spec.dataset, spec.method != "zero_shot", spec.allow_missing)
    return few, eval_sets, {k: n for k, n in dropped.items() if n}


def _summarise(results: dict) -> dict:
    """Headline numbers: accuracy per evaluation set, and for base-to-novel the harmonic mean."""
    ev = results.get("eval", {})
    summary = {label: m["accuracy"] for label, m in ev.items() if "accuracy" in m}
    if "base" in summary and "new" in summary:
        b, n = summary["base"], summary["new"]
        summary["hm"] = 2 * b * n / (b + n) if b + n > 0 else 0.0
    return summary


def run_experiment(spec: RunSpec, tracker: Tracker | None = None, provider: SplitsProvider | None = None,
                   backbone=None) -> dict:
    """Run `spec` under its protocol; write <output>/results.json (+ adapter/, plots/). Returns the results.
    The output folder is locked for the run (a second run into it stops with OutputLockedError)."""
    import contextlib

    from medclipsvd.io import output_lock

    if spec.method not in METHODS:
        raise MedClipSVDError(f"unknown method {spec.method!r} (--method); choose from {', '.join(METHODS)}")
    lock = output_lock(spec.output, what=f"{spec.method} run on {spec.dataset}") if dist_info().is_main \
        else contextlib.nullcontext()
    with lock:
        # every rank (they would otherwise wait for the main one), the main one under the lock
        check_run_folder(Path(spec.output), force=spec.force, resume=spec.resume)
        return _run_experiment(spec, tracker, provider, backbone)


def _run_experiment(spec: RunSpec, tracker: Tracker | None, provider: SplitsProvider | None, backbone) -> dict:
    tracker = tracker or NullTracker()
    plan = run_precision(spec)  # a precision this machine cannot run fails before any data or model is read
    provider = provider or default_provider(spec.allow_missing, spec.follow_symlinks,
                                            spec.load_kwargs())
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    data = data_package()
    provider = _memoised(provider)
    from medclipsvd.data.sanity import require_test_split

    for name in _datasets_of(spec):  # data first: a wrong data root fails fast, before a model or MLflow run
        require_test_split(provider(name, spec.data_root))
    seed_everything(spec.seed)
    backbone = backbone if backbone is not None else load_backbone_for(spec)
    backbone.fingerprint()  # identify the base weights before any adaptation
    template = spec.hp.template
    dist = dist_info()

    mode = mode_settings(spec.mode)  # an unknown mode fails here, before any work
    run_name = f"{spec.protocol}-{spec.dataset}-{spec.method}-k{spec.shots}-s{spec.seed}"
    with tracker.run(run_name, tags={"protocol": spec.protocol, "dataset": spec.dataset, "method": spec.method,
                                     "backbone": spec.backbone, "mode": spec.mode}):
        if dist.is_main:
            tracker.log_params(spec.params())
        if spec.protocol in ("few_shot", "base2new"):
            splits = provider(spec.dataset, spec.data_root)
            if spec.protocol == "base2new":
                base = data.split_base_new(splits, "base")
                new = data.split_base_new(splits, "new")
                few = base2new_few_shot(splits, spec.shots, spec.seed, mode)
                eval_sets = {"base": (base.test, base.classnames), "new": (new.test, new.classnames)}
            else:
                few = _few_shot(splits, spec.shots, spec.seed)
                eval_sets = {"test": (splits.test, splits.classnames)}
            few, eval_sets, dropped = _decodable(spec, few, eval_sets)
            if dist.is_main:
                _log_datasets(tracker, spec, splits, few, eval_sets)
            results = _fit_and_evaluate(spec, backbone, few, eval_sets, template, out, tracker, spec.dataset, plan)
            results["dropped_undecodable"] = dropped
        elif spec.protocol in ("cross_dataset", "domain_generalization"):
            source = spec.hp.source or spec.dataset
            src = provider(source, spec.data_root)
            few = _few_shot(src, spec.shots, spec.seed)
            eval_sets = {"source": (src.test, src.classnames)}
            templates = {}
            for target in spec.targets:
                t = provider(target, spec.data_root)
                eval_sets[target] = (t.test, t.classnames)
                templates[target] = _target_template(spec.protocol, target, template)
            few, eval_sets, dropped = _decodable(spec, few, eval_sets)
            if dist.is_main:
                _log_datasets(tracker, spec, src, few, eval_sets)
            results = _fit_and_evaluate_multi(spec, backbone, few, eval_sets, template, templates, out, tracker,
                                              source, plan)
            results["dropped_undecodable"] = dropped
        else:
            raise MedClipSVDError(f"unknown protocol {spec.protocol!r}")
        results["summary"] = _summarise(results)
        results["mode"] = spec.mode
        results["mode_settings"] = {**mode.as_dict(), **plan.mode_fields()}  # the precision that ran
        results["protocol"] = spec.protocol
        results["dataset"] = spec.dataset
        results["backbone"] = spec.backbone
        results["shots"] = spec.shots
        results["seed"] = spec.seed
        results["run"] = {"dataset": spec.dataset, "data_root": str(Path(spec.data_root).resolve()),
                          "backbone": spec.backbone, "backbone_kwargs": spec.backbone_kwargs,
                          "template": template, "protocol": spec.protocol, "method": spec.method, "mode": spec.mode,
                          "shots": spec.shots, "seed": spec.seed, "allow_missing": spec.allow_missing,
                          "preprocess": list(spec.preprocess), "split_file": spec.split_file,
                          # the input policy, recorded once (an adapter is only meaningful with the same inputs)
                          "input": spec.policy.to_dict()}
        if tracker.run_id:  # lets `interpret` / `evaluate` runs link to this training run
            results["mlflow_run_id"] = tracker.run_id
        if dist.is_main:
            path = write_results(out / RESULTS_FILE, results)
            tracker.log_metrics({f"{k}/accuracy" if k != "hm" else "hm": float(v)
                                 for k, v in results["summary"].items()})
            for label, m in results.get("eval", {}).items():
                for key in ("balanced_accuracy", "macro_f1", "auroc_ovr", "ece"):
                    if key in m and m[key] == m[key]:  # skip NaN
                        tracker.log_metrics({f"{label}/{key}": float(m[key])})
                for key, bounds in m.get("ci95", {}).items():
                    if isinstance(bounds, list):
                        tracker.log_metrics({f"{label}/{key}_ci95_low": bounds[0], f"{label}/{key}_ci95_high": bounds[1]})
                if study_metric_names(label, m):
                    tracker.log_metrics(study_metric_names(label, m))
            tracker.log_artifact(str(path))
            for sub in ("adapter", "plots"):
                if (out / sub).exists():
                    tracker.log_artifact(str(out / sub), sub)
    return results


def _memoised(provider: SplitsProvider) -> SplitsProvider:
    cache: dict = {}

    def provide(name: str, root: str):
        if (name, root) not in cache:
            cache[(name, root)] = provider(name, root)
        return cache[(name, root)]

    return provide


def _datasets_of(spec: RunSpec) -> list[str]:
    if spec.protocol in ("cross_dataset", "domain_generalization"):
        return [spec.hp.source or spec.dataset, *spec.targets]
    return [spec.dataset]


def _log_datasets(tracker: Tracker, spec: RunSpec, splits, few, eval_sets: dict) -> None:
    """MLflow dataset inputs: the few-shot training set and each evaluation set (digests, no file names)."""
    from medclipsvd.engine.dataset_record import dataset_record

    split_file = (getattr(splits, "meta", None) or {}).get("source")
    tracker.log_dataset(dataset_record(spec.dataset, "train", few.train, list(few.classnames), spec.data_root,
                                       split_file))
    for label, (samples, classnames) in eval_sets.items():
        context = "test" if label in ("test", "source") else f"test-{label}"
        own = label in ("test", "source", "base", "new")  # else a cross-dataset / DG target with its own split
        tracker.log_dataset(dataset_record(spec.dataset if own else label, context, samples, list(classnames),
                                           spec.data_root, split_file if own else None))


def _target_template(protocol: str, target: str, fallback: str) -> str:
    from medclipsvd.engine.config import ConfigError, load_hparams

    try:
        return load_hparams(protocol, target).template
    except ConfigError:
        return fallback


def _fit_and_evaluate_multi(spec, backbone, few, eval_sets, template, templates, out, tracker, source, plan):
    """Cross-dataset / DG: one training on the source, each target evaluated with its own prompt template."""
    src_only = {"source": eval_sets["source"]}
    results = _fit_and_evaluate(spec, backbone, few, src_only, template, out, tracker, source, plan)
    if not dist_info().is_main:
        return results
    _, eval_tf = transforms_for(spec, backbone, source)
    for label, (samples, classnames) in eval_sets.items():
        if label == "source":
            continue
        if spec.method == "linear_probe":
            results["eval"][label] = {"skipped": "a linear probe cannot classify another dataset's classes"}
            continue
        ds = eval_set(spec, samples, eval_tf)
        probs, y = predict(spec, plan, backbone, ds, classnames, templates[label])
        results["eval"][label] = classification_metrics(probs, y, list(classnames), ci_seed=spec.seed)
    return results
