"""`medclipsvd benchmark`: expand (dataset x K x seed x method) into runs, skip the ones that already have
results, run this shard's share, then aggregate everything on disk into the paper's tables."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from medclipsvd.engine.config import PROTOCOLS, ConfigError, HParams, hparam_datasets, load_hparams
from medclipsvd.engine.modes import DEFAULT_BENCHMARK_MODE, mode_settings, results_mode
from medclipsvd.engine.run_folder import RESULTS_FILE
from medclipsvd.engine.spec import RunSpec
from medclipsvd.engine.steps import SplitsProvider, default_provider, load_kwargs
from medclipsvd.engine.tracker import NullTracker, Tracker
from medclipsvd.errors import MedClipSVDError
from medclipsvd.methods.registry import METHODS
from medclipsvd.protocols.suites import protocol_targets, suite_datasets


def benchmark_base(**updates) -> RunSpec:
    """What every run of a benchmark shares unless told otherwise: the parity mode, no per-run plots or
    progress bars, and `force` (the benchmark decides itself: runs with results are skipped, the rest
    (re)run). Dataset, hyper-parameters, K, seed, method and output are set per run."""
    return RunSpec(dataset="", hp=HParams(), data_root="data", mode=DEFAULT_BENCHMARK_MODE, progress=False,
                   plots=False, force=True).replace(**updates)


# the sweep's own settings, in the order its MLflow parent run records them
SWEEP_FIELDS = ("suite", "protocol", "shots", "seeds", "methods", "backbone", "output", "shard", "resume")


class BenchmarkSpec:
    """A sweep: every (dataset x K x seed x method) of a suite under one protocol. Each run is the base
    RunSpec plus its updates (`plan_runs`), so a run option is set once, in ``base``; keywords that are
    RunSpec fields (device=, max_steps=, data_root=, slices=, ...) go into the base:
    ``BenchmarkSpec(suite="BUSI", shots=[1], max_steps=2)`` caps every run at two steps."""

    def __init__(self, suite: str, *, protocol: str = "few_shot", shots: list[int] | None = None,
                 seeds: list[int] | None = None, methods: list[str] | None = None, backbone: str | None = None,
                 output: str = "benchmark", shard: tuple[int, int] = (0, 1), resume: bool = False,
                 base: RunSpec | None = None, **run_options) -> None:
        self.suite = suite
        self.protocol = protocol
        self.shots = list(shots) if shots is not None else [1, 2, 4, 8, 16]
        self.seeds = list(seeds) if seeds is not None else [1, 2, 3]
        self.methods = list(methods) if methods is not None else ["svd"]
        self.backbone = backbone      # None: each config's backbone (biomedclip / clip-vit-b16)
        self.output = str(output)
        self.shard = tuple(shard)
        self.resume = resume          # continue interrupted runs from their checkpoints
        # a RunSpec refuses bad values (naming the option) here, before any run
        self.base = (base or benchmark_base()).replace(**run_options) if run_options or base is None else base

    def __repr__(self) -> str:
        return f"BenchmarkSpec({', '.join(f'{k}={getattr(self, k)!r}' for k in SWEEP_FIELDS)}, base={self.base!r})"

    def params(self) -> dict:
        """The benchmark's parameters for its MLflow parent run: the sweep's settings, then the options its
        runs share (as the runs themselves record them; the per-run ones left out)."""
        per_run = {"dataset", "method", "shots", "seed", "output", "backbone", "protocol", "targets", "force",
                   "resume"}
        shared = {k: v for k, v in self.base.params().items()
                  if k not in per_run and not k.startswith("hp.") and k != "backbone_kwargs"}
        return {**{k: getattr(self, k) for k in SWEEP_FIELDS}, **shared}

    def validate(self) -> None:
        mode_settings(self.base.mode)
        if self.protocol not in PROTOCOLS:
            raise MedClipSVDError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        have = hparam_datasets(self.protocol)
        unknown = [d for d in suite_datasets(self.suite, self.protocol) if d.lower() not in have]
        if unknown:  # before any run starts (the first run would fail on it, naming no option)
            raise MedClipSVDError(
                f"--suite {self.suite}: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not "
                f"a dataset with {self.protocol} hyper-parameters; use biomedical, natural or comma-separated "
                f"names from: {', '.join(have)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise MedClipSVDError(f"unknown method(s) {bad} (--method); choose from {', '.join(METHODS)}")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise MedClipSVDError(f"--shard {i}/{n}: need 0 <= i < n (e.g. 0/2 and 1/2)")
        if not self.shots or any(k < 1 for k in self.shots):
            raise MedClipSVDError(f"--shots must be positive integers, got {self.shots}")
        from medclipsvd.engine.config import MAX_SEED, MAX_SHOTS

        for option, values, top in (("--shots", self.shots, MAX_SHOTS), ("--seeds", self.seeds, MAX_SEED)):
            if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top for v in values):
                # every run's own limits, before the first run (named as the list option)
                raise MedClipSVDError(f"{option} {','.join(map(str, values))}: each value must be an integer "
                                      f"from {1 if option == '--shots' else 0} to {top}")


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
    targets = protocol_targets(bench.protocol, bench.base.mode)
    for dataset in suite_datasets(bench.suite, bench.protocol):
        try:
            hp = load_hparams(bench.protocol, dataset)
        except ConfigError as exc:
            raise MedClipSVDError(f"{exc}. The {bench.protocol} protocol has no configuration for {dataset}.") from None
        for k in bench.shots:
            for seed in bench.seeds:
                for method in bench.methods:
                    runs.append(bench.base.replace(
                        dataset=dataset, hp=hp, backbone=bench.backbone or hp.backbone, method=method,
                        protocol=bench.protocol, shots=k, seed=seed, targets=targets,
                        output=str(run_dir(bench.output, bench.protocol, dataset, method, k, seed))))
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
            run = run.replace(resume=True)
        elif step is not None:
            log(f"{label}: an interrupted attempt left a checkpoint at step {step}; starting afresh "
                "(pass --resume to continue from it)")
        todo.append((label, run))
    if executor.name == "local":  # one process: load each dataset once for all its runs
        base = bench.base
        provider = functools.lru_cache(maxsize=None)(provider or default_provider(
            base.allow_missing, base.follow_symlinks, load_kwargs(base.input_policy())))
    done = executor.execute(todo, tracker, provider, log)
    tables = write_tables(bench.output, bench.protocol)
    return {"planned": len(runs), "this_shard": len(mine), "ran": done, "skipped": skipped, "tables": tables,
            "executor": executor.name}
