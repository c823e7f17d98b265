"""parity reproduces the reference (LR trace, flips, base2new draws, fp16, ddof 0, cross-dataset targets);
improved keeps medclipsvd's fixes; the mode is recorded wherever results go."""
import inspect
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medclipsvd.cli import engine as cli_engine
from medclipsvd.data import DatasetSplits, Sample, dataset_info
from medclipsvd.data.sources.layouts import classnames_from_entries, read_split_json
from medclipsvd.engine.modes import IMPROVED, PARITY, base2new_few_shot, mode_settings
from medclipsvd.engine.pipeline_spec import spec_from_pipeline
from medclipsvd.engine.run import run_experiment
from medclipsvd.engine.spec import RunSpec
from medclipsvd.engine.steps import hflip_for, transforms_for
from medclipsvd.engine.trainer import autocast_for
from medclipsvd.errors import MedClipSVDError
from medclipsvd.protocols.aggregate import write_tables
from medclipsvd.protocols.harness import BenchmarkSpec, has_results, plan_runs, run_dir
from medclipsvd.protocols.suites import protocol_targets
from medclipsvd.engine.tracker import NullTracker

EXPECTED = Path(__file__).parent / "data" / "base2new_parity_train.json"


class _LRRecorder(NullTracker):
    def __init__(self):
        self.lrs = []

    def log_metrics(self, metrics, step=None):
        if "train/lr" in metrics:
            self.lrs.append(metrics["train/lr"])


def _torch_reference_trace(lr, t_max, steps, eta_min):
    """The reference: AdamW + CosineAnnealingLR(T_max=epochs) with scheduler.step() every iteration."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=lr)
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return out


def _spec(synthetic_root, out, mode, epochs=3, steps=10):
    spec = spec_from_pipeline("demo", data_root=str(synthetic_root), output=str(out), backbone="tiny-clip",
                              device="cpu", max_steps=steps, progress=False, shots=2, mode=mode)
    spec.hp = spec.hp.model_copy(update={"train_epochs": epochs, "lr": 0.01, "batch_size": 2})
    spec.plots = False
    return spec


@pytest.fixture(scope="module")
def parity_run(synthetic_root, tmp_path_factory):
    rec = _LRRecorder()
    spec = _spec(synthetic_root, tmp_path_factory.mktemp("parity"), "parity")
    return run_experiment(spec, tracker=rec), rec.lrs, spec


def test_parity_lr_trace_equals_the_reference(parity_run):
    res, lrs, spec = parity_run
    # 3 batches per epoch x 3 epochs = 9 steps (cap 10 not reached); T_max = 3 epochs stepped per iteration:
    # down to eta_min at iteration 3, back at the peak at 6
    ref = _torch_reference_trace(spec.hp.lr, spec.hp.train_epochs, 9, spec.hp.eta_min)
    assert lrs == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert lrs[6] == pytest.approx(spec.hp.lr) and lrs[3] == pytest.approx(spec.hp.eta_min)
    assert res["mode"] == "parity" and res["train"]["reference_schedule"]
    assert res["train"]["amp"] in ("fp32", "bf16")  # the reference's fp16 is CUDA's; a CPU never runs it
    on_disk = json.loads((Path(spec.output) / "results.json").read_text())
    assert on_disk["mode"] == "parity" and on_disk["mode_settings"]["std_ddof"] == 0
    assert on_disk["spec"]["mode"] == "parity"  # the tracker's params come from spec.params()


def test_improved_lr_decays_once(synthetic_root, tmp_path):
    rec = _LRRecorder()
    spec = _spec(synthetic_root, tmp_path, "improved", epochs=2)
    res = run_experiment(spec, tracker=rec)
    assert res["mode"] == "improved" and res["train"]["t_max"] == 6 and len(rec.lrs) == 6
    assert all(a >= b for a, b in zip(rec.lrs, rec.lrs[1:]))


def test_flips_on_every_dataset_in_parity():
    bb = SimpleNamespace(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    for name in ("COVID_19", "KneeXray", "BUSI"):
        parity = RunSpec(dataset=name, hp=PARITY_HP, mode="parity")
        assert hflip_for(parity, name) and transforms_for(parity, bb, name)[0].hflip
    # improved keeps the registry's choice: no flips where laterality matters
    assert not dataset_info("KneeXray").hflip
    assert not transforms_for(RunSpec(dataset="KneeXray", hp=PARITY_HP, mode="improved"), bb, "KneeXray")[0].hflip
    # an explicit pipeline setting still wins
    assert not hflip_for(RunSpec(dataset="BUSI", hp=PARITY_HP, mode="parity", hflip=False), "BUSI")


from medclipsvd.engine.config import HParams  # noqa: E402

PARITY_HP = HParams()


def test_precision_per_mode():
    assert (PARITY.train_amp, PARITY.eval_text_amp, PARITY.eval_image_amp) == ("fp16", "fp16", "fp32")
    assert (IMPROVED.train_amp, IMPROVED.eval_image_amp) == ("bf16", "bf16")
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        ctx = autocast_for(torch.device("cuda"), "fp16")
    assert ctx.fast_dtype == torch.float16
    with pytest.raises(MedClipSVDError, match="fp16 runs on CUDA only"):  # never run (or recorded) on a CPU
        autocast_for(torch.device("cpu"), "fp16")
    assert autocast_for(torch.device("cpu"), "bf16").fast_dtype == torch.bfloat16
    assert not isinstance(autocast_for(torch.device("cpu"), "fp32"), torch.autocast)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _splits_from_file(path: Path) -> DatasetSplits:
    entries = read_split_json(path)
    names = classnames_from_entries(entries)
    make = lambda items: [Sample(e[0], int(e[1]), e[2]) for e in items]  # noqa: E731
    return DatasetSplits(path.stem, names, make(entries["train"]), make(entries["val"]), make(entries["test"]),
                         dataset_info("BUSI"))


@pytest.mark.realdata
def test_parity_base2new_draws_equal_the_frozen_reference_lists(shared_data):
    expected = json.loads(EXPECTED.read_text())
    k, matched, improved_same = expected["k"], 0, 0
    for dataset, per_seed in expected["train"].items():
        splits = _splits_from_file(shared_data / "splits" / f"split_{dataset}.json")
        for seed, paths in per_seed.items():
            got = [s.path for s in base2new_few_shot(splits, k, int(seed), PARITY).train]
            assert got == paths, f"{dataset} seed {seed}"
            matched += 1
            improved = [s.path for s in base2new_few_shot(splits, k, int(seed), IMPROVED).train]
            improved_same += improved == paths
            assert sorted(set(improved)) != [] and len(improved) == len(paths)
    assert matched == 24
    assert improved_same == 0  # the finding: splitting first changes every base2new training set


def test_std_over_seeds_ddof_by_mode(tmp_path):
    for mode in ("parity", "improved"):
        out = tmp_path / mode
        for seed, acc in ((1, 50.0), (2, 60.0)):
            d = run_dir(out, "few_shot", "BUSI", "svd", 1, seed)
            d.mkdir(parents=True)
            (d / "results.json").write_text(json.dumps({"dataset": "BUSI", "method": "svd", "shots": 1,
                                                        "seed": seed, "mode": mode, "summary": {"test": acc}}))
        md = Path(write_tables(out, "few_shot")["markdown"]).read_text()
        assert f"{mode} mode" in md
        assert ("55.00 ± 5.00" if mode == "parity" else "55.00 ± 7.07") in md


def test_cross_dataset_targets_by_mode():
    assert "EuroSAT" not in protocol_targets("cross_dataset", "parity")
    assert "EuroSAT" in protocol_targets("cross_dataset", "improved")
    assert len(protocol_targets("cross_dataset", "parity")) == 9


def test_benchmark_defaults_to_parity_train_to_improved():
    assert BenchmarkSpec(suite="BUSI").base.mode == "parity"
    assert inspect.signature(cli_engine.benchmark).parameters["mode"].default.default == "parity"
    assert inspect.signature(cli_engine.train).parameters["mode"].default.default == "improved"
    assert RunSpec(dataset="x", hp=PARITY_HP).mode == "improved"
    runs = plan_runs(BenchmarkSpec(suite="BUSI", shots=[1], seeds=[1], output="o"))
    assert runs[0].mode == "parity"


def test_benchmark_refuses_to_mix_modes(tmp_path):
    run = plan_runs(BenchmarkSpec(suite="BUSI", shots=[1], seeds=[1], output=str(tmp_path)))[0]
    Path(run.output).mkdir(parents=True)
    (Path(run.output) / "results.json").write_text(json.dumps({"summary": {"test": 1.0}, "mode": "improved"}))
    with pytest.raises(MedClipSVDError, match="--mode improved"):
        has_results(run)
    run.mode = "improved"
    assert has_results(run)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(MedClipSVDError, match="parity .* or improved"):
        mode_settings("paper")
    assert math.isfinite(PARITY.std_ddof)


@pytest.mark.parametrize("cmd", ["train", "benchmark"])
def test_cli_unknown_mode_fails_before_any_work(cmd, tmp_path, capsys, monkeypatch):
    from medclipsvd.cli.app import main

    args = (["train", "--pipeline", "breast_ultrasound"] if cmd == "train" else ["benchmark", "--suite", "BUSI"])
    args += ["--data-root", str(tmp_path), "--output", str(tmp_path / "out"), "--mode", "paper", "--no-mlflow"]
    monkeypatch.setattr(sys, "argv", ["medclipsvd", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code != 0
    assert "unknown --mode 'paper'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
