"""One RunSpec (issue 17 item 5): one pydantic model with the InputPolicy nested; refused values name the
CLI option; a benchmark is a base RunSpec plus per-run updates; results.json's "spec" record keeps its
layout; the docs/python-api.md example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from medclipsvd.data.volumes.policy import InputPolicy
from medclipsvd.engine.config import ConfigError, HParams
from medclipsvd.engine.spec import RunSpec
from medclipsvd.protocols.harness import BenchmarkSpec, plan_runs

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"

# results.json "spec" as written before the policy was nested (0.2), key order included, plus the series
# selection keys (issue 18) after the policy and the precision asked for (issue 19) after the cache folder
OLD_SPEC_KEYS = [
    "dataset", "backbone", "method", "protocol", "shots", "seed", "data_root", "output", "device", "mode",
    "reference_schedule", "hflip", "crop_scale", "lr", "max_steps", "checkpoint_every", "resume", "num_workers",
    "eval_batch_size", "progress", "backbone_kwargs", "targets", "allow_missing", "plots", "preprocess",
    "preprocess_source", "split_file", "slices", "window", "axis", "dicom_frames", "series", "on_bad_series",
    "cache_dir", "precision", "follow_symlinks",
    "force", "hp.protocol", "hp.dataset", "hp.backbone", "hp.lr", "hp.train_epochs", "hp.weight_decay",
    "hp.layers", "hp.template", "hp.batch_size", "hp.iterations", "hp.n_iters", "hp.reference_t_max", "hp.shots",
    "hp.source", "hp.eta_min"]


def _spec(**kw) -> RunSpec:
    return RunSpec(dataset="custom", hp=HParams(), **kw)


def test_policy_is_nested_and_loose_keys_fold_into_it():
    spec = _spec(slices="all", window="lung")
    assert spec.policy == InputPolicy(slices="all", window="lung")
    assert _spec(policy=InputPolicy(axis="coronal"), slices="slices:3").policy == \
        InputPolicy(slices="slices:3", axis="coronal")
    assert _spec().policy == InputPolicy()
    assert _spec(split_file=Path("s.json")).input_policy() == {
        "slices": "middle", "window": None, "axis": "axial", "dicom_frames": "middle", "split_file": "s.json"}


def test_params_keep_the_results_json_layout():
    params = _spec(slices="all", crop_scale=(0.5, 1.0), targets=["a"]).params()
    assert list(params) == OLD_SPEC_KEYS
    assert (params["slices"], params["window"], params["crop_scale"], params["targets"]) == \
        ("all", None, "(0.5, 1.0)", "['a']")


@pytest.mark.parametrize("kw, message", [
    ({"shots": 0}, "--shots 0: Input should be greater than or equal to 1"),
    ({"max_steps": 0}, "--max-steps 0: "),
    ({"lr": float("nan")}, "--lr nan: "),
    ({"seed": -3}, "--seed -3: "),
    ({"checkpoint_every": -1}, "--checkpoint-every -1: "),
    ({"crop_scale": (1.5, 0.2)}, "augmentation.random_resized_crop_scale (1.5, 0.2): "),
    ({"output": "  "}, "--output '  ': an empty path"),
    ({"lr": 1e-7}, "eta_min 1e-06 is larger than --lr 1e-07"),
])
def test_refused_values_name_the_cli_option(kw, message):
    with pytest.raises(ConfigError) as info:
        _spec(**kw)
    assert str(info.value).startswith(message) or message in str(info.value)
    assert "\n" not in str(info.value)


def test_replace_validates_the_copy():
    spec = _spec(shots=4)
    assert spec.replace(shots=8).shots == 8 and spec.shots == 4
    with pytest.raises(ConfigError, match="--shots 0"):
        spec.replace(shots=0)
    with pytest.raises(ConfigError, match="--num-workers -1"):
        spec.replace(num_workers=-1)


def test_a_benchmark_is_a_base_spec_plus_updates(tmp_path):
    bench = BenchmarkSpec(suite="BUSI", shots=[1, 2], seeds=[3], methods=["svd", "lora"], output=str(tmp_path),
                          device="cpu", max_steps=7, slices="all", num_workers=0)
    runs = plan_runs(bench)
    assert [(r.shots, r.seed, r.method) for r in runs] == [(1, 3, "svd"), (1, 3, "lora"), (2, 3, "svd"),
                                                           (2, 3, "lora")]
    per_run = {"dataset", "hp", "backbone", "method", "protocol", "shots", "seed", "output", "targets"}
    for r in runs:  # every other field is the base's
        assert {k: v for k, v in r if k not in per_run} == {k: v for k, v in bench.base if k not in per_run}
        assert (r.device, r.max_steps, r.policy.slices, r.mode, r.force) == ("cpu", 7, "all", "parity", True)
    assert runs[1].output == str(tmp_path / "runs" / "few_shot" / "BUSI" / "lora" / "k1_s3")
    with pytest.raises(ConfigError, match="--max-steps 0"):
        BenchmarkSpec(suite="BUSI", max_steps=0)


def test_runoptions_is_gone():
    import medclipsvd.engine.config as config

    assert not hasattr(config, "RunOptions") and not hasattr(config, "validate_run_options")


def test_python_api_run_configuration_example_runs(monkeypatch, tmp_path, capsys):
    text = DOC.read_text()
    section = text[text.index("## Run configuration: one `RunSpec`"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "InputPolicy(slices='all', window=None, axis='axial', dicom_frames='middle', modality=None)"
    assert out[1].startswith("--shots 0: ")
    assert out[2] == "4 bench/runs/few_shot/BUSI/svd/k1_s1 10"
