"""`medclipsvd benchmark`: expand (dataset x K x seed x method) into runs, skip the ones that already have
results, run this shard's share, then aggregate everything on disk into the paper's tables."""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from medclipsvd.engine.config import PROTOCOLS, ConfigError, load_hparams, validate_run_options
from medclipsvd.methods.registry import METHODS
from medclipsvd.engine.modes import DEFAULT_BENCHMARK_MODE, mode_settings, results_mode
from medclipsvd.engine.run import RESULTS_FILE, RunSpec, SplitsProvider, default_provider
from medclipsvd.errors import MedClipSVDError
from medclipsvd.protocols.suites import protocol_targets, suite_datasets
from medclipsvd.engine.tracker import NullTracker, Tracker


@dataclass
class BenchmarkSpec:
    suite: str
    protocol: str = "few_shot"
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    methods: list[str] = field(default_factory=lambda: ["svd"])
    backbone: str | None = None          # None: each config's backbone (biomedclip / clip-vit-b16)
    data_root: str = "data"
    output: str = "benchmark"
    device: str = "auto"
    mode: str = DEFAULT_BENCHMARK_MODE   # parity: the reference exactly (engine/modes.py)
    reference_schedule: bool = False
    max_steps: int | None = None
    shard: tuple[int, int] = (0, 1)
    backbone_kwargs: dict = field(default_factory=dict)
    num_workers: int | None = None
    progress: bool = False
    allow_missing: bool = False
    follow_symlinks: bool = False
    plots: bool = False               # per-run confusion matrices / training curves (tables always get plots)
    resume: bool = False              # continue interrupted runs from their checkpoints
    cache_dir: str | None = None      # preprocessed evaluation cache (None: the default folder; 'off')
    volume: dict = field(default_factory=dict)  # hospital options given: split_file, slices, window, axis, dicom_frames

    def validate(self) -> None:
        mode_settings(self.mode)
        if self.protocol not in PROTOCOLS:
            raise MedClipSVDError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise MedClipSVDError(f"unknown method(s) {bad} (--method); choose from {', '.join(METHODS)}")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise MedClipSVDError(f"--shard {i}/{n}: need 0 <= i < n (e.g. 0/2 and 1/2)")
        if not self.shots or any(k < 1 for k in self.shots):
            raise MedClipSVDError(f"--shots must be positive integers, got {self.shots}")
        validate_run_options(num_workers=self.num_workers)  # each run's --num-workers, refused before any run
        for option, values, key in (("--shots", self.shots, "shots"), ("--seeds", self.seeds, "seed")):
            for v in values:  # every run's own limits, before the first run (named as the list option)
                try:
                    validate_run_options(**{key: v})
                except MedClipSVDError as exc:
                    raise MedClipSVDError(f"{option} {','.join(map(str, values))}: {exc}") from None


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise MedClipSVDError(f"--shard {text!r}: write it as i/n, e.g. 0/4 (this process runs every 4th run)") from None
    return i, n


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MedClipSVDError(f"{what} {text!r}: write comma-separated integers, e.g. 1,2,4,8,16") from None


def run_dir(output: str | Path, protocol: str, dataset: str, method: str, shots: int, seed: int) -> Path:
    return Path(output) / "runs" / protocol / dataset / method / f"k{shots}_s{seed}"


def plan_runs(bench: BenchmarkSpec) -> list[RunSpec]:
    """Every run of the benchmark, in a fixed order (sharding depends on it)."""
    bench.validate()
    runs = []
    targets = protocol_targets(bench.protocol, bench.mode)
    for dataset in suite_datasets(bench.suite, bench.protocol):
        try:
            hp = load_hparams(bench.protocol, dataset)
        except ConfigError as exc:
            raise MedClipSVDError(f"{exc}. The {bench.protocol} protocol has no configuration for {dataset}.") from None
        for k in bench.shots:
            for seed in bench.seeds:
                for method in bench.methods:
                    runs.append(RunSpec(
                        dataset=dataset, hp=hp, backbone=bench.backbone or hp.backbone, method=method,
                        protocol=bench.protocol, shots=k, seed=seed, data_root=bench.data_root,
                        output=str(run_dir(bench.output, bench.protocol, dataset, method, k, seed)),
                        device=bench.device, mode=bench.mode, reference_schedule=bench.reference_schedule,
                        max_steps=bench.max_steps, backbone_kwargs=dict(bench.backbone_kwargs),
                        num_workers=bench.num_workers, progress=bench.progress, targets=targets,
                        allow_missing=bench.allow_missing, plots=bench.plots,
                        follow_symlinks=bench.follow_symlinks, cache_dir=bench.cache_dir,
                        # the benchmark decides itself: runs with results are skipped, the rest (re)run
                        force=True, **{k: v for k, v in bench.volume.items() if v is not None}))
    return runs


def has_results(run: RunSpec) -> bool:
    path = Path(run.output) / RESULTS_FILE
    if not path.exists():
        return False
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # a half-written file from a killed run: run it again
    if "summary" not in res:
        return False
    if results_mode(res) != run.mode:  # never overwrite, never mix modes in one table
        raise MedClipSVDError(f"{path} holds {results_mode(res)}-mode results but this benchmark runs in "
                              f"{run.mode} mode; use another --output, or --mode {results_mode(res)} to continue it")
    return True


def interrupted_step(run: RunSpec) -> int | None:
    """Step of the checkpoint an interrupted run left (None: no usable checkpoint)."""
    from medclipsvd.engine.trainer import CHECKPOINT_FILE, CHECKPOINT_META

    ckpt = Path(run.output) / "checkpoint"
    if not (ckpt / CHECKPOINT_FILE).is_file():
        return None
    try:
        return int(json.loads((ckpt / CHECKPOINT_META).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # torn or missing record: the trainer reports it if --resume is used


def run_benchmark(bench: BenchmarkSpec, tracker: Tracker | None = None, provider: SplitsProvider | None = None,
                  log=print, executor=None) -> dict:
    """Run this shard's missing runs (in this process, or on Ray: protocols/executors.py), then aggregate
    all results under bench.output. Returns counts and the paths of the tables."""
    from medclipsvd.protocols.aggregate import write_tables
    from medclipsvd.protocols.executors import LocalExecutor

    tracker = tracker or NullTracker()
    executor = executor or LocalExecutor()
    runs = plan_runs(bench)
    i, n = bench.shard
    mine = [r for j, r in enumerate(runs) if j % n == i]
    todo = []
    skipped = 0
    for j, run in enumerate(mine, 1):
        label = f"[{j}/{len(mine)}] {run.protocol} {run.dataset} {run.method} K={run.shots} seed={run.seed}"
        if has_results(run):
            skipped += 1
            log(f"{label}: results exist, skipped")
            continue
        step = interrupted_step(run)
        if step is not None and bench.resume:
            log(f"{label}: resuming from its checkpoint at step {step}")
            run = dataclasses.replace(run, resume=True)
        elif step is not None:
            log(f"{label}: an interrupted attempt left a checkpoint at step {step}; starting afresh "
                "(pass --resume to continue from it)")
        todo.append((label, run))
    if executor.name == "local":  # one process: load each dataset once for all its runs
        provider = functools.lru_cache(maxsize=None)(provider or default_provider(
            bench.allow_missing, bench.follow_symlinks, {k: v for k, v in bench.volume.items() if v is not None}))
    done = executor.execute(todo, tracker, provider, log)
    tables = write_tables(bench.output, bench.protocol)
    return {"planned": len(runs), "this_shard": len(mine), "ran": done, "skipped": skipped, "tables": tables,
            "executor": executor.name}
