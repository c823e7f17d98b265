"""--precision (medclipsvd/device.py): what auto chooses per device and mode, what is refused, that results
record what ran (a CPU parity run never records fp16), and bf16 vs fp32 within the documented tolerance with
σ kept as float32 master weights (docs/training.md, "Precision")."""
import json
import sys

import pytest
import torch

from medclipsvd import device as devmod
from medclipsvd.device import PrecisionError, cpu_native_bf16, precision_plan
from medclipsvd.engine.modes import IMPROVED, PARITY

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(*flags): this process's CPU reports exactly these feature flags."""
    def use(*flags):
        monkeypatch.setattr(devmod, "cpu_flags", lambda: frozenset(flags))
    return use


@pytest.fixture
def fake_cuda(monkeypatch):
    def use(bf16: bool):
        monkeypatch.setattr(devmod, "_cuda_bf16", lambda dev: bf16)
    return use


def phases(plan):
    return plan.train, plan.eval_text, plan.eval_image


@pytest.mark.parametrize("flags,native", [
    (("avx2", "fma3"), False),
    (("avx512_f", "avx512_bw", "avx512_vl"), False),   # oneDNN "supports" bf16 here, by conversion: not native
    (("avx512_f", "avx512_bf16"), True),
    (("amx_tile", "amx_bf16"), True),
    (("neon", "bf16"), True),                          # Arm BF16 extension
])
def test_native_bf16_is_read_from_the_cpu_flags(fake_cpu, flags, native):
    fake_cpu(*flags)
    assert cpu_native_bf16() is native


def test_auto_on_a_cpu_without_native_bf16_is_fp32_in_both_modes(fake_cpu):
    fake_cpu("avx2")
    for mode in (None, IMPROVED, PARITY):
        assert phases(precision_plan("auto", CPU, mode)) == ("fp32", "fp32", "fp32")


def test_auto_on_a_cpu_with_native_bf16(fake_cpu):
    fake_cpu("avx512_bf16")
    assert phases(precision_plan("auto", CPU, IMPROVED)) == ("bf16", "bf16", "bf16")
    # parity: the reference's fp16 (CUDA) becomes the CPU's bf16; its fp32 image features stay fp32
    assert phases(precision_plan("auto", CPU, PARITY)) == ("bf16", "bf16", "fp32")


def test_auto_on_cuda_keeps_parity_fp16(fake_cuda):
    fake_cuda(True)
    assert phases(precision_plan("auto", CUDA, PARITY)) == ("fp16", "fp16", "fp32")
    assert phases(precision_plan("auto", CUDA, IMPROVED)) == ("bf16", "bf16", "bf16")
    fake_cuda(False)  # a GPU without bf16: auto does not lower what it cannot run
    assert phases(precision_plan("auto", CUDA, IMPROVED)) == ("fp32", "fp32", "fp32")


@pytest.mark.parametrize("mode", [IMPROVED, PARITY])
def test_an_explicit_precision_runs_in_every_phase(fake_cpu, fake_cuda, mode):
    fake_cpu("amx_bf16")
    fake_cuda(True)
    assert phases(precision_plan("fp32", CPU, mode)) == ("fp32",) * 3
    assert phases(precision_plan("bf16", CPU, mode)) == ("bf16",) * 3
    assert phases(precision_plan("fp16", CUDA, mode)) == ("fp16",) * 3
    plan = precision_plan("bf16", CPU, mode)
    assert plan.record() == {"asked": "bf16", "device": "cpu", "train": "bf16", "eval_text": "bf16",
                             "eval_image": "bf16"}


@pytest.mark.parametrize("precision,device,cpu_flags,cuda_bf16,message", [
    ("bf16", CPU, ("avx2",), True, "this CPU has no native bf16"),
    ("bf16", CPU, ("avx512_f", "avx512_bw"), True, "this CPU has no native bf16"),
    ("fp16", CPU, ("amx_bf16",), True, "fp16 runs on CUDA only"),
    ("bf16", CUDA, ("avx2",), False, "this GPU has no bf16 support"),
    ("fp8", CPU, ("avx2",), True, "use auto, fp32, bf16 or fp16"),
])
def test_what_cannot_run_is_refused_not_swapped(fake_cpu, fake_cuda, precision, device, cpu_flags, cuda_bf16,
                                                message):
    fake_cpu(*cpu_flags)
    fake_cuda(cuda_bf16)
    with pytest.raises(PrecisionError, match=message):
        precision_plan(precision, device)


def test_run_spec_refuses_an_unknown_precision_naming_the_option():
    from medclipsvd.engine.config import ConfigError, HParams
    from medclipsvd.engine.spec import RunSpec

    with pytest.raises(ConfigError, match=r"^--precision 'fp8': use auto, fp32, bf16 or fp16"):
        RunSpec(dataset="x", hp=HParams(), precision="fp8")
    assert RunSpec(dataset="x", hp=HParams(), precision="fp16").precision == "fp16"  # the machine is asked per run


def test_a_benchmark_puts_the_precision_into_every_run():
    from medclipsvd.protocols.harness import BenchmarkSpec, plan_runs

    bench = BenchmarkSpec(suite="BUSI", shots=[1, 2], seeds=[1], precision="fp32")
    runs = plan_runs(bench)
    assert bench.base.precision == "fp32" and len(runs) == 2
    assert [r.precision for r in runs] == ["fp32", "fp32"]
    assert bench.params()["precision"] == "fp32"  # the MLflow parent run records it once


def test_run_precision_follows_the_spec_mode_and_device(fake_cpu):
    from medclipsvd.engine.config import HParams
    from medclipsvd.engine.spec import RunSpec
    from medclipsvd.engine.steps import run_precision

    fake_cpu("amx_bf16")
    spec = RunSpec(dataset="x", hp=HParams(), device="cpu", mode="parity")
    assert phases(run_precision(spec)) == ("bf16", "bf16", "fp32")
    assert phases(run_precision(spec.replace(mode="improved"))) == ("bf16", "bf16", "bf16")
    fake_cpu("avx2")
    with pytest.raises(PrecisionError, match="this CPU has no native bf16"):
        run_precision(spec.replace(precision="bf16"))


def test_cli_refuses_bf16_on_a_cpu_without_it_before_any_work(fake_cpu, monkeypatch, capsys, tmp_path,
                                                              synthetic_root):
    from medclipsvd.cli.app import main

    fake_cpu("avx2")
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["medclipsvd", "train", "--pipeline", "demo", "--data-root",
                                      str(synthetic_root), "--output", str(out), "--backbone", "tiny-clip",
                                      "--device", "cpu", "--precision", "bf16", "--no-mlflow"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "error: --precision bf16: this CPU has no native bf16" in err and "Traceback" not in err
    assert not (out / "results.json").exists() and not (out / "adapter").exists()


@pytest.mark.parametrize("argv", [
    ["evaluate", "--adapter", "ADAPTER"],
    ["predict", "--adapter", "ADAPTER", "IMAGE"],
    ["interpret", "--adapter", "ADAPTER", "--output", "OUT"],
    ["benchmark", "--suite", "BUSI", "--data-root", "ROOT", "--output", "OUT"],
])
def test_every_command_takes_precision_and_refuses_alike(argv, fake_cpu, monkeypatch, capsys, tmp_path):
    from medclipsvd.cli.app import main

    fake_cpu("avx2")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "image.png").write_bytes(b"")
    subst = {"ADAPTER": str(tmp_path / "adapter"), "IMAGE": str(tmp_path / "image.png"),
             "OUT": str(tmp_path / "out"), "ROOT": str(tmp_path)}
    tracking = [] if argv[0] == "predict" else ["--no-mlflow"]  # predict has no tracking run
    monkeypatch.setattr(sys, "argv", ["medclipsvd", *[subst.get(a, a) for a in argv], "--device", "cpu",
                                      "--precision", "fp16", *tracking])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "error: --precision fp16 runs on CUDA only" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _spec(synthetic_root, out, mode, **kw):
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline

    return spec_from_pipeline("demo", data_root=str(synthetic_root), output=str(out), backbone="tiny-clip",
                              device="cpu", max_steps=2, progress=False, shots=2, mode=mode, plots=False, **kw)


@pytest.mark.parametrize("flags,ran", [(("avx2",), "fp32"), (("amx_bf16",), "bf16")])
def test_a_cpu_parity_run_records_what_ran_never_fp16(fake_cpu, synthetic_root, tmp_path, monkeypatch, flags, ran):
    from medclipsvd.engine import run as run_mod

    fake_cpu(*flags)
    seen = []  # the autocast dtype each training step actually entered
    real = run_mod.train

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        seen.append(res.precision)
        return res

    monkeypatch.setattr(run_mod, "train", spy)
    res = run_mod.run_experiment(_spec(synthetic_root, tmp_path, "parity"))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert seen == [ran]
    assert on_disk["train"]["amp"] == ran
    assert on_disk["mode_settings"]["train_amp"] == ran and on_disk["mode_settings"]["eval_text_amp"] == ran
    assert on_disk["mode_settings"]["eval_image_amp"] == "fp32"   # parity evaluates images in fp32
    assert on_disk["precision"] == {"asked": "auto", "device": "cpu", "train": ran, "eval_text": ran,
                                    "eval_image": "fp32"}
    assert "fp16" not in json.dumps({k: on_disk[k] for k in ("train", "mode_settings", "precision")})
    assert res["precision"] == on_disk["precision"]


def test_the_trainer_enters_the_planned_autocast(synthetic_root, tmp_path, monkeypatch):
    """The recorded precision is the one the forward passes ran under (not only a label)."""
    from medclipsvd.engine import trainer

    dtypes = []
    real = trainer.ContrastiveClassifier.forward

    def forward(self, *a, **kw):
        dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real(self, *a, **kw)

    monkeypatch.setattr(trainer.ContrastiveClassifier, "forward", forward)
    from medclipsvd.engine.run import run_experiment

    run_experiment(_spec(synthetic_root, tmp_path / "a", "improved", precision="fp32"))
    assert dtypes and set(dtypes) == {torch.float32}
    dtypes.clear()
    monkeypatch.setattr(devmod, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    res = run_experiment(_spec(synthetic_root, tmp_path / "b", "improved", precision="bf16"))
    assert dtypes and set(dtypes) == {torch.bfloat16} and res["train"]["amp"] == "bf16"


# ---------------------------------------------------------------------------------------------
# bf16 against fp32. Bounds measured on full-size random-init BiomedCLIP by benchmarks/cpu_precision.py
# --tolerance (docs/training.md, "Precision"); a tiny model keeps them here.
MAX_COS_DIFF = 2e-2          # |cos_bf16 - cos_fp32| of any image/class pair (logit / logit_scale)
MIN_UPDATE_COSINE = 0.95     # cosine of the σ updates (σ_N - σ_0) of the two runs after N steps
MAX_SIGMA_REL_DIFF = 1e-3    # ‖σ_bf16 - σ_fp32‖ / ‖σ_fp32‖ after N steps


def _tiny_adapted(seed=0):
    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import adapt

    torch.manual_seed(seed)
    bb = load_backbone("tiny-biomedclip")
    adapt(bb, "paper", cache_dir=False)
    return bb


class _Images(torch.utils.data.Dataset):
    def __init__(self, n, size, classes):
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.arange(n) % classes

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_bf16_logits_stay_within_the_documented_tolerance():
    from medclipsvd.engine.evaluator import text_features

    bb = _tiny_adapted().eval()
    x = torch.randn(8, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(1))
    names = ["benign tumor", "malignant tumor", "normal tissue"]
    cos = {}
    with torch.no_grad():
        for prec in ("fp32", "bf16"):
            txt = text_features(bb, names, "a photo of a {}.", CPU, prec)
            with devmod.autocast(CPU, prec):
                img = bb.encode_image(x).float()
            img = torch.nn.functional.normalize(img, dim=-1)
            cos[prec] = img @ torch.nn.functional.normalize(txt, dim=-1).T
    diff = float((cos["bf16"] - cos["fp32"]).abs().max())
    assert 0 < diff <= MAX_COS_DIFF   # > 0: bf16 really ran (an fp32 run would match exactly)


def test_bf16_training_keeps_fp32_sigma_and_optimizer_state_and_tracks_fp32(tmp_path):
    from medclipsvd.engine.trainer import CHECKPOINT_FILE, TrainSettings, train
    from medclipsvd.svd import sigma_parameters

    steps, sigma, sigma0 = 8, {}, None
    for prec in ("fp32", "bf16"):
        bb = _tiny_adapted()
        params = sigma_parameters(bb)
        sigma0 = torch.cat([p.detach().flatten().clone() for p in params.values()])
        ck = tmp_path / prec
        settings = TrainSettings(lr=2e-3, total_steps=steps, t_max=steps, batch_size=4, device="cpu",
                                 progress=False, checkpoint_dir=str(ck), amp=prec)
        res = train(bb, params, _Images(12, bb.image_size, 3), ["a", "b", "c"], "a photo of a {}.", settings,
                    text_trainable=True)
        assert res.precision == prec
        assert all(p.dtype == torch.float32 for p in params.values())          # master weights stay fp32
        state = torch.load(ck / CHECKPOINT_FILE, weights_only=True)["optimizer"]["state"]
        assert state and all(s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32
                             for s in state.values())
        sigma[prec] = torch.cat([p.detach().flatten() for p in params.values()])
    d32, d16 = sigma["fp32"] - sigma0, sigma["bf16"] - sigma0
    update_cos = float(torch.nn.functional.cosine_similarity(d32, d16, dim=0))
    rel = float((sigma["bf16"] - sigma["fp32"]).norm() / sigma["fp32"].norm())
    assert float(d32.norm()) > 0 and not torch.equal(sigma["fp32"], sigma["bf16"])
    assert update_cos >= MIN_UPDATE_COSINE
    assert rel <= MAX_SIGMA_REL_DIFF
