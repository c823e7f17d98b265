"""One experiment end to end: data -> few-shot subset -> backbone -> method -> train -> save -> merge ->
evaluate -> results JSON + plots (+ tracking). Used by `medclipsvd train`, the benchmark protocols,
`medclipsvd demo` and the notebook API."""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medclipsvd.data.volumes.policy import InputPolicy
from medclipsvd.engine.config import HParams
from medclipsvd.engine.distributed import dist_info
from medclipsvd.engine.evaluator import (fit_linear_probe, image_features, predict_probs, probe_probs,
                                         write_results)
from medclipsvd.engine.metrics import classification_metrics, study_metric_names, with_study_metrics
from medclipsvd.methods.registry import METHODS, prepare_method
from medclipsvd.engine.modes import ModeSettings, base2new_few_shot, mode_settings, results_mode
from medclipsvd.engine.plots import plot_confusion_matrix, plot_evaluation, plot_training_curve
from medclipsvd.engine.trainer import TrainSettings, resolve_device, train
from medclipsvd.errors import MedClipSVDError
from medclipsvd.engine.tracker import NullTracker, Tracker

RESULTS_FILE = "results.json"

# (name, root) -> DatasetSplits; the default reads from disk through medclipsvd.data.
SplitsProvider = Callable[[str, str], object]


@dataclass
class RunSpec:
    """Everything that defines one run. `hp` carries the method hyper-parameters (configs/)."""

    dataset: str
    hp: HParams
    backbone: str = "biomedclip"
    method: str = "svd"
    protocol: str = "few_shot"
    shots: int = 16
    seed: int = 1
    data_root: str = "."
    output: str = "runs/out"
    device: str = "auto"
    mode: str = "improved"                  # parity | improved (engine/modes.py)
    reference_schedule: bool = False        # improved mode: take only parity's learning-rate schedule
    hflip: bool | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    lr: float | None = None                 # override (baselines have their own defaults)
    max_steps: int | None = None            # cap the iteration count (smoke tests); None: the reference's
    checkpoint_every: int = 0
    resume: bool = False
    num_workers: int | None = None          # None: from the CPU count on CUDA, 0 on CPU
    eval_batch_size: int = 64
    progress: bool = True
    backbone_kwargs: dict = field(default_factory=dict)  # weights=, text_dir=, random_init= for load_backbone
    targets: list[str] = field(default_factory=list)     # cross-dataset / DG: datasets evaluated after training
    allow_missing: bool = False
    plots: bool = True                                   # per-run figures (benchmarks turn them off)
    # MONAI dictionary transforms ([{"name", "args"}], from the pipeline's `preprocess:`) run before the
    # standard transforms; empty: the reference's transforms alone. preprocess_source: the YAML they came from.
    preprocess: list = field(default_factory=list)
    preprocess_source: str | None = None
    # hospital data (medclipsvd.data.volumes.policy.InputPolicy): split file, 3-D -> 2-D policy, CT window
    split_file: str | None = None
    slices: str = "middle"
    window: str | None = None
    axis: str = "axial"
    dicom_frames: str = "middle"
    modality: str | None = None                          # CT | MR for NIfTI volumes (None: guessed from values)

    cache_dir: str | None = None                         # preprocessed eval cache: None default folder, 'off'
    follow_symlinks: bool = False                        # data entries may be symlinks leading outside the root
    force: bool = False                                  # replace a completed (or interrupted) run in `output`

    def __post_init__(self) -> None:  # the API gets the CLI's limits (and messages naming the options)
        from medclipsvd.engine.config import ConfigError, check_lr_floor, validate_run_options

        validate_run_options(shots=self.shots, seed=self.seed, lr=self.lr, max_steps=self.max_steps,
                             checkpoint_every=self.checkpoint_every, num_workers=self.num_workers,
                             eval_batch_size=self.eval_batch_size, crop_scale=tuple(self.crop_scale))
        if not str(self.output).strip():
            raise ConfigError(f"--output {str(self.output)!r}: an empty path would write into the current folder; "
                              "name the run folder, e.g. --output runs/busi-k4")
        lr, lr_name = self._training_lr()
        try:
            check_lr_floor(lr, self.hp.eta_min, lr_name, "the hyper-parameters' eta_min")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _training_lr(self) -> tuple[float | None, str]:
        """The rate the optimiser will start from, and what set it (for messages)."""
        from medclipsvd.methods.registry import DEFAULT_LR

        if self.lr is not None:
            return self.lr, "--lr"
        if self.method == "svd":
            return self.hp.lr, "lr"
        return DEFAULT_LR.get(self.method), f"the {self.method} default learning rate"

    @property
    def policy(self) -> InputPolicy:
        """How images are read (recorded once: results.json "run"."input")."""
        return InputPolicy(slices=self.slices, window=self.window, axis=self.axis, dicom_frames=self.dicom_frames,
                           modality=self.modality)

    def input_policy(self) -> dict:
        """The input policy and split file as keyword arguments of `load_dataset`."""
        return {**self.policy.to_dict(), "split_file": self.split_file}

    def params(self) -> dict:
        d = asdict(self)
        d.pop("hp")
        d.update({f"hp.{k}": v for k, v in self.hp.model_dump().items()})
        return {k: (str(v) if isinstance(v, (list, tuple, dict)) else v) for k, v in d.items()}


def _volume_kwargs(policy: dict) -> dict:
    out = {k: policy[k] for k in ("split_file", "slices", "window", "axis", "dicom_frames")}
    return {**out, "modality": policy["modality"]} if policy.get("modality") else out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_provider(allow_missing: bool = False, follow_symlinks: bool = False,
                     volume: dict | None = None) -> SplitsProvider:
    """Reads from disk; ``volume``: split_file / slices / window / axis / dicom_frames for load_dataset."""
    def provide(name: str, root: str):
        from medclipsvd.data import load_dataset

        return load_dataset(name, root, allow_missing=allow_missing, follow_symlinks=follow_symlinks,
                            **(volume or {}))

    return provide


def _data():
    import medclipsvd.data as data

    return data


def _hflip(spec: RunSpec, dataset: str) -> bool:
    if spec.hflip is not None:
        return spec.hflip
    if mode_settings(spec.mode).hflip_all:  # parity: the reference flips every dataset
        return True
    try:
        return bool(_data().dataset_info(dataset).hflip)
    except Exception:  # custom/unregistered datasets: flips are the reference default
        return True


def _transforms(spec: RunSpec, backbone, dataset: str):
    data = _data()
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    hflip = _hflip(spec, dataset)
    scale = tuple(spec.crop_scale)
    if scale == (0.08, 1.0):  # the reference's crop
        train_tf = data.build_transform(size, mean, std, train=True, hflip=hflip)
    else:  # build_transform has no scale argument; its TrainTransform does
        from medclipsvd.data.transforms import TrainTransform

        train_tf = TrainTransform(size, mean, std, hflip=hflip, scale=scale)
    eval_tf = data.build_transform(size, mean, std, train=False)
    if spec.preprocess:  # user MONAI transforms first; without them the reference transforms, untouched
        from medclipsvd.data.preprocess import build_preprocess, with_preprocess

        pre = build_preprocess(spec.preprocess, source=spec.preprocess_source)
        train_tf, eval_tf = with_preprocess(train_tf, pre, train=True), with_preprocess(eval_tf, pre)
    return train_tf, eval_tf


_BASE_CACHE: dict = {}


def load_backbone_for(spec: RunSpec):
    """A fresh copy of the base backbone. The last base loaded is kept in memory and deep-copied, so a
    benchmark builds (or downloads and verifies) each backbone once rather than once per run."""
    import copy

    from medclipsvd.backbones import load_backbone

    key = (spec.backbone, json.dumps(spec.backbone_kwargs, sort_keys=True))
    if key not in _BASE_CACHE:
        _BASE_CACHE.clear()  # one base at a time: full-size models are large
        base = load_backbone(spec.backbone, **spec.backbone_kwargs)
        base.fingerprint()
        _BASE_CACHE[key] = base
    return copy.deepcopy(_BASE_CACHE[key])


def _eval_ds(spec: RunSpec, samples, eval_tf):
    """Evaluation images through the preprocessed cache (decoded once per sweep; see data/eval_cache.py)."""
    from medclipsvd.data.eval_cache import eval_dataset

    return eval_dataset(samples, eval_tf, spec.cache_dir)


def _few_shot(splits, k: int, seed: int):
    return _data().sample_few_shot(splits, k, seed)


def _fit_and_evaluate(spec: RunSpec, backbone, train_splits, eval_sets: dict[str, tuple[object, list[str]]],
                      template: str, out: Path, tracker: Tracker, train_dataset_name: str) -> dict:
    """Train `spec.method` on train_splits (already few-shot), evaluate on each eval set
    {label: (list of Sample, classnames)}. Returns the results dict (also written to out/results.json)."""
    data = _data()
    dist = dist_info()
    mode = mode_settings(spec.mode)
    seed_everything(spec.seed)
    train_tf, eval_tf = _transforms(spec, backbone, train_dataset_name)
    results: dict = {"spec": spec.params(), "template": template, "method": spec.method, "mode": spec.mode,
                     "hflip": _hflip(spec, train_dataset_name),
                     "n_train": len(train_splits.train), "classnames": list(train_splits.classnames)}
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
            num_workers=spec.num_workers, progress=spec.progress, amp=mode.train_amp)
        train_set = data.ImageDataset(train_splits.train, train_tf, cache=True)
        res = train(backbone, prepared.params, train_set, list(train_splits.classnames), template, settings,
                    text_trainable=prepared.text_trainable, tracker=tracker)
        results["train"] = {"steps": res.steps, "t_max": t_max, "reference_schedule": reference_schedule,
                            "amp": mode.train_amp, "lr": prepared.lr, "final_loss": res.final_loss,
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
        ftr, ytr = image_features(backbone, _eval_ds(spec, train_splits.train, eval_tf), dev, spec.eval_batch_size)
        fval, yval = (image_features(backbone, _eval_ds(spec, train_splits.val, eval_tf), dev,
                                     spec.eval_batch_size) if train_splits.val else (None, None))
        probe = fit_linear_probe(ftr.numpy(), ytr.numpy(), None if fval is None else fval.numpy(),
                                 None if yval is None else yval.numpy(), spec.seed)
        results["train"] = {"probe_C": float(getattr(probe, "C", 1.0)), "n_features": int(ftr.shape[1])}
    results["train_seconds"] = round(time.perf_counter() - t0, 3)

    if not dist.is_main:
        return results
    results["eval"] = {}
    for label, (samples, classnames) in eval_sets.items():
        ds = _eval_ds(spec, samples, eval_tf)
        if probe is not None:
            if list(classnames) != list(train_splits.classnames):
                results["eval"][label] = {"skipped": "a linear probe cannot classify classes it was not trained on"}
                continue
            dev = resolve_device(spec.device)
            f, y = image_features(backbone, ds, dev, spec.eval_batch_size, spec.num_workers, amp=mode.eval_image_amp)
            probs, labels = probe_probs(probe, f.numpy(), len(classnames)), y.numpy()
        else:
            probs, labels = _predict(spec, mode, backbone, ds, classnames, template, spec.progress)
        metrics = with_study_metrics(classification_metrics(probs, labels, list(classnames), ci_seed=spec.seed),
                                     probs, labels, samples, list(classnames))
        results["eval"][label] = metrics
        if spec.plots:
            plot_evaluation(probs, labels, metrics, list(classnames), out / "plots", label,
                            title=f"{spec.dataset} {label} · {spec.method} · {spec.mode} mode")
            if "study" in metrics:
                plot_confusion_matrix(metrics["study"]["confusion_matrix"], list(classnames),
                                      out / "plots" / f"confusion_{label}_study.png",
                                      title=f"{spec.dataset} {label}, per study ({spec.method})")
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


def _predict(spec: RunSpec, mode: ModeSettings, backbone, ds, classnames, template: str, progress: bool = False):
    """Softmax probabilities and labels, in the mode's evaluation precision."""
    return predict_probs(backbone, ds, list(classnames), template, spec.device, spec.eval_batch_size,
                         spec.num_workers, progress=progress, text_amp=mode.eval_text_amp,
                         image_amp=mode.eval_image_amp)


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
        raise MedClipSVDError(f"unknown method {spec.method!r}; choose from {', '.join(METHODS)}")
    lock = output_lock(spec.output, what=f"{spec.method} run on {spec.dataset}") if dist_info().is_main \
        else contextlib.nullcontext()
    with lock:
        # every rank (they would otherwise wait for the main one), the main one under the lock
        check_run_folder(Path(spec.output), force=spec.force, resume=spec.resume)
        return _run_experiment(spec, tracker, provider, backbone)


class OutputExistsError(MedClipSVDError):
    """The output folder already holds a run that this one would overwrite."""


def check_run_folder(out: Path, *, force: bool = False, resume: bool = False) -> None:
    """Refuse to train into a folder holding an earlier run unless asked: a completed run (results.json)
    needs --force; an interrupted one (a checkpoint, or an adapter without results) needs --resume to go on
    or --force to start afresh. Nothing is overwritten silently."""
    if force:
        return
    from medclipsvd.engine.trainer import CHECKPOINT_FILE

    results = out / RESULTS_FILE
    if results.exists():
        what = "there is nothing to resume; " if resume else ""
        raise OutputExistsError(f"--output {out} already holds a completed run ({results.name}"
                                f"{', adapter/' if (out / 'adapter').is_dir() else ''}); {what}pass --force to "
                                "replace it, or choose another --output")
    if resume:
        return
    checkpoint = out / "checkpoint" / CHECKPOINT_FILE
    adapter = out / "adapter"
    if checkpoint.exists() or (adapter.is_dir() and any(adapter.iterdir())):
        found = "checkpoint/" if checkpoint.exists() else "adapter/"
        raise OutputExistsError(f"--output {out} holds an interrupted run ({found} without results.json); pass "
                                "--resume to continue it, --force to start afresh over it, or choose another --output")


def _run_experiment(spec: RunSpec, tracker: Tracker | None, provider: SplitsProvider | None, backbone) -> dict:
    tracker = tracker or NullTracker()
    provider = provider or default_provider(spec.allow_missing, spec.follow_symlinks,
                                            _volume_kwargs(spec.input_policy()))
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    data = _data()
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
            results = _fit_and_evaluate(spec, backbone, few, eval_sets, template, out, tracker, spec.dataset)
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
                                              source)
            results["dropped_undecodable"] = dropped
        else:
            raise MedClipSVDError(f"unknown protocol {spec.protocol!r}")
        results["summary"] = _summarise(results)
        results["mode"] = spec.mode
        results["mode_settings"] = mode.as_dict()
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


def _fit_and_evaluate_multi(spec, backbone, few, eval_sets, template, templates, out, tracker, source):
    """Cross-dataset / DG: one training on the source, each target evaluated with its own prompt template."""
    src_only = {"source": eval_sets["source"]}
    results = _fit_and_evaluate(spec, backbone, few, src_only, template, out, tracker, source)
    if not dist_info().is_main:
        return results
    _, eval_tf = _transforms(spec, backbone, source)
    for label, (samples, classnames) in eval_sets.items():
        if label == "source":
            continue
        if spec.method == "linear_probe":
            results["eval"][label] = {"skipped": "a linear probe cannot classify another dataset's classes"}
            continue
        ds = _eval_ds(spec, samples, eval_tf)
        probs, y = _predict(spec, mode_settings(spec.mode), backbone, ds, classnames, templates[label])
        results["eval"][label] = classification_metrics(probs, y, list(classnames), ci_seed=spec.seed)
    return results


# ---------------------------------------------------------------------------------------------
def spec_from_pipeline(pipeline: str, *, data_root: str, output: str, backbone: str | None = None,
                       shots: int | None = None, seed: int = 1, method: str = "svd", protocol: str | None = None,
                       volume: dict | None = None, **overrides) -> RunSpec:
    """A RunSpec from a pipeline (pipelines/<name>.yaml) and the method configs (configs/). ``volume``: the
    hospital options given on the command line (split_file, slices, window, axis, dicom_frames), which
    override the pipeline's."""
    from medclipsvd.engine.config import load_pipeline

    p = load_pipeline(pipeline)
    protocol = protocol or p.protocol
    if protocol not in ("few_shot", "base2new"):
        raise MedClipSVDError(f"`train` runs few_shot or base2new; for {protocol} use `medclipsvd benchmark "
                              f"--protocol {protocol}` (it trains on ImageNet and evaluates the targets)")
    hp = p.method_hparams(protocol)
    return RunSpec(dataset=p.dataset, hp=hp, backbone=backbone or p.backbone, method=method, protocol=protocol,
                   shots=next(k for k in (shots, hp.shots, p.shots) if k is not None), seed=seed, data_root=data_root, output=output,
                   hflip=p.augmentation.hflip, crop_scale=tuple(p.augmentation.random_resized_crop_scale),
                   **{"preprocess": [s.model_dump() for s in p.preprocess], "preprocess_source": p.source,
                      **p.volume_options(), **{k: v for k, v in (volume or {}).items() if v is not None},
                      **overrides})


def read_run_settings(path: Path) -> dict:
    """The `run` record of a training results.json ({} when there is none); a damaged file is an error that
    says how to go on without it."""
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_json

    if not path.exists():
        return {}
    try:
        data = load_json(path)  # UTF-8, bounded size and depth
    except FileFormatError as exc:
        raise MedClipSVDError(f"{path} (the training run's results, read for its settings) is damaged "
                              f"({exc.problem}); restore it, or move it away and pass --pipeline, "
                              "--data-root and --backbone") from None
    except OSError as exc:
        raise MedClipSVDError(f"{path} (the training run's results, read for its settings) cannot be read "
                              f"({str(exc).splitlines()[0]}); restore it, or move it away and pass --pipeline, "
                              "--data-root and --backbone") from None
    run = data.get("run", {}) if isinstance(data, dict) else None
    if not isinstance(run, dict):
        raise MedClipSVDError(f"{path}: its 'run' record is not an object; restore the file, or move it away and "
                              "pass --pipeline, --data-root and --backbone")
    if run.get("preprocess"):  # data, checked against the allow-list before anything else is done with it
        from medclipsvd.data.preprocess_steps import validate_steps

        run["preprocess"] = validate_steps(run["preprocess"], source=str(path))
    return run


def _require_split(samples: list, split: str, dataset: str, data_root) -> None:
    if not samples:
        raise MedClipSVDError(f"{dataset}: its {split} split has no usable images under {data_root}; there is "
                              f"nothing to evaluate - choose another --split (`medclipsvd data check` counts them).")


def evaluate_adapter(adapter: str, *, data_root: str | None = None, pipeline: str | None = None,
                     backbone: str | None = None, subsample: str = "all", split: str = "test",
                     output: str | None = None, device: str = "auto", allow_missing: bool = False,
                     backbone_kwargs: dict | None = None, provider: SplitsProvider | None = None,
                     follow_symlinks: bool = False, cache_dir: str | None = None,
                     volume: dict | None = None, force: bool = False) -> tuple[dict, Path]:
    """Evaluate a saved adapter. Missing settings come from the training run's results.json next to it.

    ``volume``: split_file / slices / window / axis / dicom_frames; a key that is absent (or None for
    split_file) falls back to the training run's value, then to the default. An earlier evaluation.json in
    the output folder is replaced only with ``force``."""
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
                                            _volume_kwargs(policy))
    splits = provider(dataset, data_root)
    if subsample != "all":
        splits = _data().split_base_new(splits, subsample)
    elif run.get("protocol") == "base2new":
        splits = _data().split_base_new(splits, "base")  # what the adapter was trained on
    _require_split(splits.split(split), split, dataset, data_root)  # before any model is built
    bb = load_backbone(backbone, **kw)
    bb.fingerprint()
    method = load_merged(bb, adapter_dir)
    preprocess = [s.model_dump() for s in p.preprocess] if pipeline else run.get("preprocess", [])
    source = p.source if pipeline else (str(run_file) if preprocess else None)
    spec = RunSpec(dataset=dataset, hp=HParams(), device=device, mode=results_mode(run), preprocess=preprocess,
                   preprocess_source=source)
    _, eval_tf = _transforms(spec, bb, dataset)
    from medclipsvd.data.checks import drop_undecodable

    kept, dropped = drop_undecodable({split: getattr(splits, split)}, allow_missing or bool(run.get("allow_missing")),
                                     dataset)
    from medclipsvd.data.eval_cache import eval_dataset

    samples = kept[split]
    _require_split(samples, split, dataset, data_root)
    ds = eval_dataset(samples, eval_tf, cache_dir)
    probs, labels = _predict(spec, mode_settings(spec.mode), bb, ds, splits.classnames, template)
    metrics = with_study_metrics(classification_metrics(probs, labels, list(splits.classnames),
                                                        ci_seed=int(run.get("seed") or 0)),
                                 probs, labels, samples, list(splits.classnames))
    results = {"adapter": str(adapter_dir), "method": method, "mode": spec.mode, "dataset": dataset, "backbone": backbone,
               "template": template, "split": split, "subsample": subsample, "shots": run.get("shots"),
               "seed": run.get("seed"), "eval": {split: metrics}, "summary": {split: metrics["accuracy"]},
               "dropped_undecodable": {k: n for k, n in dropped.items() if n},
               "input": {k: v for k, v in policy.items()}}
    from medclipsvd.io import output_lock

    with output_lock(out, what="evaluate"):
        write_results(out / "evaluation.json", results)
        plot_evaluation(probs, labels, metrics, list(splits.classnames), out, split,
                        title=f"{dataset} {split} · {method} · {spec.mode} mode")
        if "study" in metrics:
            plot_confusion_matrix(metrics["study"]["confusion_matrix"], list(splits.classnames),
                                  out / f"confusion_{split}_study.png", title=f"{dataset} {split}, per study ({method})")
    return results, out / "evaluation.json"
