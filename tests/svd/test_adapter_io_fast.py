"""Adapter folders (svd/adapter_io.py) on the width-8 toy backbone: milliseconds per test, so mutation
testing of adapter_io runs these. Expected digests come from hashlib, expected tensors from safetensors'
own reader, altered files are written with safetensors' own writer (well-formed, only the values differ)."""
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from svd_toy_backbone import ToySVDBackbone, inputs  # noqa: E402

import medclipsvd  # noqa: E402
from medclipsvd.errors import AdapterError, AdapterMismatchError  # noqa: E402
from medclipsvd.svd import adapter_io  # noqa: E402
from medclipsvd.svd.adapt import adapt, adapt_state, initial_sigmas, sigma_parameters  # noqa: E402
from medclipsvd.svd.adapter_io import (SIGMA_LIMIT, check_base, check_finite, check_sigma_range,  # noqa: E402
                                       load_adapter, read_adapter_config, read_sigmas, save_adapter)
from medclipsvd.svd.targets import TargetSpec  # noqa: E402

SPEC = {"towers": "both", "layers": [0, 1], "matrices": ["v", "o", "fc2"]}


def _trained(targets=SPEC, seed=0, **kw) -> ToySVDBackbone:
    bb = adapt(ToySVDBackbone(seed=seed, **kw), targets, cache_dir=False)
    with torch.no_grad():
        for i, p in enumerate(sigma_parameters(bb).values()):
            p.mul_(1.0 + 0.05 * (i + 1)).add_(0.01)
    return bb


def _sigmas(bb):
    return {n: p.detach().clone() for n, p in sigma_parameters(bb).items()}


def _config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())


def _write_config(folder: Path, config) -> None:
    (folder / "adapter_config.json").write_text(json.dumps(config))


def _message(exc_info) -> str:
    return str(exc_info.value)


# --- save -----------------------------------------------------------------------------------------
def test_save_writes_the_sigmas_and_a_config_naming_base_targets_and_digest(tmp_path):
    bb = _trained()
    t0 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    assert save_adapter(bb, tmp_path / "a") == tmp_path / "a"
    weights = tmp_path / "a" / "adapter.safetensors"
    stored = load_file(str(weights))
    sig = _sigmas(bb)
    assert list(stored) == sorted(sig)
    for name, t in sig.items():
        assert stored[name].dtype == torch.float32
        torch.testing.assert_close(stored[name], t, rtol=0, atol=0)
    with safe_open(str(weights), framework="pt") as fh:
        assert fh.metadata() == {"format": "medclipsvd.sigma-adapter"}
    config = _config(tmp_path / "a")
    created = dt.datetime.fromisoformat(config.pop("created_utc"))
    assert created.utcoffset() == dt.timedelta(0) and t0 <= created <= dt.datetime.now(dt.timezone.utc)
    assert config == {
        "format": "medclipsvd.sigma-adapter",
        "format_version": 1,
        "method": "svd",
        "library_version": medclipsvd.__version__,
        "backbone": {"name": "toy-svd", "source": "toy-weights", "fingerprint": ToySVDBackbone().fingerprint()},
        "preset": None,
        "targets": {"towers": "both", "layers": [0, 1], "matrices": ["v", "o", "fc2"], "modules": None},
        "target_names": list(sig),
        "trainable_parameters": 8 * len(sig),
        "dtype": "float32",
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }


def test_save_records_the_preset_and_extra(tmp_path):
    bb = _trained("mlp")
    save_adapter(bb, tmp_path / "a", extra={"run": "r1", "lr": 0.01})
    config = _config(tmp_path / "a")
    assert config["preset"] == "mlp" and config["extra"] == {"run": "r1", "lr": 0.01}
    save_adapter(bb, tmp_path / "b", extra={})
    assert "extra" not in _config(tmp_path / "b")


def test_a_float64_backbone_is_saved_as_float32(tmp_path):
    bb = _trained()
    bb.double()
    save_adapter(bb, tmp_path / "a")
    assert {t.dtype for t in load_file(str(tmp_path / "a" / "adapter.safetensors")).values()} == {torch.float32}


def test_nothing_to_save_from_a_plain_backbone(tmp_path):
    with pytest.raises(AdapterError) as info:
        save_adapter(ToySVDBackbone(), tmp_path / "a")
    assert _message(info) == "nothing to save: the backbone is not adapted (or was merged)"
    assert not (tmp_path / "a").exists()


def test_non_finite_sigma_is_not_written(tmp_path):
    bb = _trained()
    name = list(sigma_parameters(bb))[2]
    with torch.no_grad():
        sigma_parameters(bb)[name][1] = float("nan")
    with pytest.raises(AdapterError) as info:
        save_adapter(bb, tmp_path / "a")
    assert _message(info) == (
        f"refusing to write the adapter to {tmp_path / 'a'}: tensor {name} holds 1 non-finite value(s) (NaN/inf); "
        "the adapter comes from a diverged training and cannot be used — retrain with a lower --lr")
    assert not (tmp_path / "a").exists()


def test_out_of_range_sigma_is_not_written(tmp_path):
    bb = _trained()
    name = list(sigma_parameters(bb))[0]
    scale = max(float(initial_sigmas(bb)[name].abs().max()), 1.0)  # the toy's σ₀ are below 1
    with torch.no_grad():
        sigma_parameters(bb)[name][0] = -2 * SIGMA_LIMIT * scale
    with pytest.raises(AdapterError) as info:
        save_adapter(bb, tmp_path / "a")
    top = 2 * SIGMA_LIMIT * scale
    assert _message(info) == (
        f"refusing to write the adapter to {tmp_path / 'a'}: tensor {name} holds σ = {top:.3g}, {top / scale:.3g} "
        f"times its base matrix's scale ({scale:.3g}; at most 1000 times is accepted, or the model's outputs "
        "overflow); the training diverged - retrain with a lower --lr")
    assert not (tmp_path / "a").exists()


# --- load -----------------------------------------------------------------------------------------
def test_round_trip_into_a_fresh_backbone(tmp_path):
    bb = _trained()
    save_adapter(bb, tmp_path / "a")
    x = inputs()
    expected = [t.detach() for t in bb(*x)]
    fresh = ToySVDBackbone()
    assert load_adapter(fresh, tmp_path / "a", cache_dir=False) is fresh
    state = adapt_state(fresh)
    assert state.spec == TargetSpec(**SPEC) and state.preset is None
    for name, t in _sigmas(bb).items():
        torch.testing.assert_close(sigma_parameters(fresh)[name].detach(), t, rtol=0, atol=0)
    for a, b in zip(fresh(*x), expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_load_restores_the_preset(tmp_path):
    save_adapter(_trained("attention"), tmp_path / "a")
    fresh = load_adapter(ToySVDBackbone(), tmp_path / "a", cache_dir=False)
    assert adapt_state(fresh).preset == "attention"
    assert adapt_state(fresh).spec == TargetSpec(matrices=("q", "k", "v", "o"))


def test_load_passes_cache_and_progress_on(tmp_path, monkeypatch):
    save_adapter(_trained(), tmp_path / "a")
    seen = {}
    real = adapter_io.adapt
    monkeypatch.setattr(adapter_io, "adapt", lambda bb, spec, **kw: seen.update(kw) or real(bb, spec, **kw))
    load_adapter(ToySVDBackbone(), tmp_path / "a", cache_dir=tmp_path / "cache", progress=True)
    assert seen == {"cache_dir": tmp_path / "cache", "progress": True}
    load_adapter(ToySVDBackbone(), tmp_path / "a")
    assert seen == {"cache_dir": None, "progress": False}


def test_load_into_an_already_adapted_backbone(tmp_path):
    bb = _trained()
    save_adapter(bb, tmp_path / "a")
    same = adapt(ToySVDBackbone(), SPEC, cache_dir=False)
    load_adapter(same, tmp_path / "a")
    for name, t in _sigmas(bb).items():
        torch.testing.assert_close(sigma_parameters(same)[name].detach(), t, rtol=0, atol=0)
    other = adapt(ToySVDBackbone(), "mlp", cache_dir=False)
    with pytest.raises(AdapterError) as info:
        load_adapter(other, tmp_path / "a")
    assert _message(info) == f"the backbone is already adapted with other targets than the adapter in {tmp_path / 'a'}"


def test_an_altered_but_well_formed_tensor_file_is_refused(tmp_path):
    save_adapter(_trained(), tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    t = load_file(str(weights))
    first = sorted(t)[0]
    t[first] = t[first] * 1.01
    save_file(t, str(weights), metadata={"format": "medclipsvd.sigma-adapter"})
    fresh = ToySVDBackbone()
    with pytest.raises(AdapterError) as info:
        load_adapter(fresh, tmp_path / "a", cache_dir=False)
    assert _message(info) == (f"{weights} does not match its adapter_config.json (sha256 differs): the files come from "
                              "different saves or were altered; restore the adapter folder from the run's artefacts")
    assert adapt_state(fresh) is None  # refused before the backbone is touched


def test_a_config_without_digest_is_accepted_as_an_older_adapter(tmp_path):
    save_adapter(_trained(), tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    t = load_file(str(weights))
    first = sorted(t)[0]
    t[first] = t[first] * 1.01
    save_file(t, str(weights))
    config = _config(tmp_path / "a")
    del config["weights_sha256"]
    _write_config(tmp_path / "a", config)
    fresh = load_adapter(ToySVDBackbone(), tmp_path / "a", cache_dir=False)
    torch.testing.assert_close(sigma_parameters(fresh)[first].detach(), t[first], rtol=0, atol=0)


def test_another_base_is_refused(tmp_path):
    save_adapter(_trained(), tmp_path / "a")
    fp = ToySVDBackbone().fingerprint()
    other = ToySVDBackbone(seed=1)
    with pytest.raises(AdapterMismatchError) as info:
        load_adapter(other, tmp_path / "a", cache_dir=False)
    assert _message(info) == (
        f"the adapter in {tmp_path / 'a'} was made for backbone 'toy-svd' (weights toy-weights, fingerprint "
        f"{fp[:12]}), "
        f"but the given backbone is 'toy-svd' (weights toy-weights, fingerprint {other.fingerprint()[:12]}). Load the "
        "base it was made from, e.g. load_backbone('toy-svd', weights=...), or `--backbone toy-svd`.")
    assert adapt_state(other) is None
    with pytest.raises(AdapterMismatchError):  # same weights under another name
        load_adapter(ToySVDBackbone(name="toy-other"), tmp_path / "a", cache_dir=False)


def test_a_base_named_by_its_folder_or_hub_id_is_known_by_its_weights(tmp_path):
    save_adapter(_trained(name="local-dir:/old/place"), tmp_path / "a")
    load_adapter(ToySVDBackbone(name="hf-hub:org/model"), tmp_path / "a", cache_dir=False)  # moved: accepted
    with pytest.raises(AdapterMismatchError):
        load_adapter(ToySVDBackbone(name="hf-hub:org/model", seed=1), tmp_path / "a", cache_dir=False)
    with pytest.raises(AdapterMismatchError):
        load_adapter(ToySVDBackbone(name="toy-svd"), tmp_path / "a", cache_dir=False)
    check_base(ToySVDBackbone(name="local-dir:/new"), _config(tmp_path / "a"), tmp_path / "a")


def test_out_of_range_sigma_in_a_file_is_refused(tmp_path):
    bb = _trained()
    save_adapter(bb, tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    t = load_file(str(weights))
    name = sorted(t)[1]
    scale = max(float(initial_sigmas(bb)[name].abs().max()), 1.0)  # the toy's σ₀ are below 1
    t[name][2] = 5 * SIGMA_LIMIT * scale
    save_file(t, str(weights))
    config = _config(tmp_path / "a")
    config["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    _write_config(tmp_path / "a", config)
    with pytest.raises(AdapterError) as info:
        load_adapter(ToySVDBackbone(), tmp_path / "a", cache_dir=False)
    top = 5 * SIGMA_LIMIT * scale
    assert _message(info) == (
        f"{weights}: tensor {name} holds σ = {top:.3g}, {top / scale:.3g} times its base matrix's scale ({scale:.3g}; "
        "at most 1000 times is accepted, or the model's outputs overflow); the file was edited or comes from a "
        "diverged training - restore the adapter folder from the run's artefacts, or retrain with a lower --lr")


def _resave(folder: Path, change) -> None:
    weights = folder / "adapter.safetensors"
    t = load_file(str(weights))
    change(t)
    save_file(t, str(weights))
    config = _config(folder)
    config["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    _write_config(folder, config)


@pytest.mark.parametrize("value, count", [(float("nan"), 1), (float("inf"), 2)])
def test_non_finite_sigma_in_a_file_is_refused(tmp_path, value, count):
    save_adapter(_trained(), tmp_path / "a")
    name = None

    def change(t):
        nonlocal name
        name = sorted(t)[3]
        t[name][:count] = value

    _resave(tmp_path / "a", change)
    with pytest.raises(AdapterError) as info:
        read_sigmas(tmp_path / "a")
    assert _message(info) == (
        f"{tmp_path / 'a' / 'adapter.safetensors'}: tensor {name} holds {count} non-finite value(s) (NaN/inf); the "
        "adapter comes from a diverged training and cannot be used — retrain with a lower --lr")


def test_integer_sigma_in_a_file_is_refused(tmp_path):
    save_adapter(_trained(), tmp_path / "a")
    _resave(tmp_path / "a", lambda t: t.update({k: v.round().to(torch.int32) for k, v in t.items()}))
    first = sorted(load_file(str(tmp_path / "a" / "adapter.safetensors")))[0]
    with pytest.raises(AdapterError) as info:
        read_sigmas(tmp_path / "a")
    assert _message(info) == (
        f"{tmp_path / 'a' / 'adapter.safetensors'}: tensor {first} has dtype int32; adapter values must be floating "
        "point (the file was not written by medclipsvd or was edited)")


def test_load_reads_the_config_once(tmp_path, monkeypatch):
    # the config whose base was checked is the one whose digest the tensors are checked against
    save_adapter(_trained(), tmp_path / "a")
    reads = []
    real = adapter_io.read_adapter_config
    monkeypatch.setattr(adapter_io, "read_adapter_config", lambda d: reads.append(d) or real(d))
    load_adapter(ToySVDBackbone(), tmp_path / "a", cache_dir=False)
    assert reads == [tmp_path / "a"]


def test_sigmas_of_other_targets_name_the_file(tmp_path):
    save_adapter(_trained(), tmp_path / "a")
    dropped = None

    def drop(t):
        nonlocal dropped
        dropped = sorted(t)[0]
        del t[dropped]

    _resave(tmp_path / "a", drop)
    with pytest.raises(AdapterError) as info:
        load_adapter(ToySVDBackbone(), tmp_path / "a", cache_dir=False)
    assert _message(info) == (f"σ in {tmp_path / 'a' / 'adapter.safetensors'} do not match the adapted matrices: "
                              f"1 missing (e.g. {[dropped]}), 0 unexpected (e.g. [])")


def test_read_sigmas_checks_against_the_config_it_is_given(tmp_path):
    save_adapter(_trained(), tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    t = load_file(str(weights))
    first = sorted(t)[0]
    t[first] = t[first] + 1.0
    save_file(t, str(weights))
    config = read_adapter_config(tmp_path / "a")
    with pytest.raises(AdapterError, match="sha256 differs"):
        read_sigmas(tmp_path / "a", config)
    config.pop("weights_sha256")
    torch.testing.assert_close(read_sigmas(tmp_path / "a", config)[first], t[first], rtol=0, atol=0)


def test_read_sigmas_reads_the_checked_tensors(tmp_path):
    bb = _trained()
    save_adapter(bb, tmp_path / "a")
    config = read_adapter_config(tmp_path / "a")
    for got in (read_sigmas(tmp_path / "a"), read_sigmas(str(tmp_path / "a"), config, device="cpu")):
        assert set(got) == set(_sigmas(bb))
        for name, t in _sigmas(bb).items():
            torch.testing.assert_close(got[name], t, rtol=0, atol=0)
            assert got[name].device.type == "cpu"


def test_missing_or_damaged_tensor_file(tmp_path):
    save_adapter(_trained(), tmp_path / "a")
    weights = tmp_path / "a" / "adapter.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    config = _config(tmp_path / "a")
    del config["weights_sha256"]
    _write_config(tmp_path / "a", config)
    with pytest.raises(AdapterError) as info:
        read_sigmas(tmp_path / "a")
    assert _message(info).startswith(f"{weights} cannot be read (")
    assert _message(info).endswith("); the adapter file is damaged")
    weights.unlink()
    with pytest.raises(AdapterError) as info:
        read_sigmas(tmp_path / "a")
    assert _message(info) == f"{weights} is missing; the adapter folder is incomplete"


# --- the config file -------------------------------------------------------------------------------
def test_missing_config(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(AdapterError) as info:
        read_adapter_config(tmp_path / "a")
    assert _message(info) == (
        f"{tmp_path / 'a'} is not an adapter folder: adapter_config.json is missing (an adapter folder holds "
        "adapter_config.json and adapter.safetensors, written by save_adapter or `medclipsvd train`)")


@pytest.fixture
def folder(tmp_path):
    return save_adapter(_trained(), tmp_path / "a")


def test_config_that_is_not_json(folder):
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError) as info:
        read_adapter_config(folder)
    m = _message(info)
    assert m.startswith(f"{folder / 'adapter_config.json'}: not valid JSON (")
    assert m.endswith("); the file is damaged: restore it from the run's MLflow artefacts or retrain")


def test_config_that_cannot_be_read(folder, monkeypatch):
    import medclipsvd.io.safeload as safeload

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(safeload, "load_json", denied)
    with pytest.raises(AdapterError) as info:
        read_adapter_config(folder)
    assert _message(info) == f"{folder / 'adapter_config.json'} cannot be read (Permission denied)"


def test_config_of_another_method(folder):
    config = _config(folder)
    config["method"] = "lora"
    _write_config(folder, config)
    with pytest.raises(AdapterError) as info:
        read_adapter_config(folder)
    assert _message(info) == (f"{folder / 'adapter_config.json'} holds a 'lora' adapter, not a σ-adapter; load it "
                              "with medclipsvd.methods.load_trained")
    del config["method"]  # written before the key existed: a σ-adapter
    _write_config(folder, config)
    assert read_adapter_config(folder)["format"] == "medclipsvd.sigma-adapter"


@pytest.mark.parametrize("config, found", [({"format": "other"}, "'other'"), ({}, "None"), ([1, 2], "'list'"),
                                           ("text", "'str'")])
def test_config_of_another_format(folder, config, found):
    _write_config(folder, config)
    with pytest.raises(AdapterError) as info:
        read_adapter_config(folder)
    assert _message(info) == f"{folder / 'adapter_config.json'} is not a medclipsvd σ-adapter (format {found})"


@pytest.mark.parametrize("edit, field, what", [
    (lambda c: c["backbone"].pop("fingerprint"), "backbone.fingerprint", "is missing"),
    (lambda c: c.pop("targets"), "targets", "is missing"),
    (lambda c: c.update(format_version="one"), "format_version",
     "is invalid (Input should be a valid integer, unable to parse string as an integer)"),
])
def test_config_with_a_missing_or_invalid_field(folder, edit, field, what):
    config = _config(folder)
    edit(config)
    _write_config(folder, config)
    with pytest.raises(AdapterError) as info:
        read_adapter_config(folder)
    assert _message(info) == (f"{folder / 'adapter_config.json'}: field '{field}' {what} (1 problem(s)); the file is "
                              "damaged or was edited: restore it from the run's MLflow artefacts or retrain")


def test_config_counts_its_problems(folder):
    config = _config(folder)
    del config["backbone"], config["targets"]
    _write_config(folder, config)
    with pytest.raises(AdapterError, match=r"field 'backbone' is missing \(2 problem\(s\)\)"):
        read_adapter_config(folder)


def test_config_from_a_newer_version(folder):
    config = _config(folder)
    config["format_version"] = 2
    _write_config(folder, config)
    with pytest.raises(AdapterError) as info:
        read_adapter_config(folder)
    assert _message(info) == (f"{folder / 'adapter_config.json'} uses adapter format 2, newer than this "
                              "medclipsvd (1); upgrade medclipsvd")


@pytest.mark.parametrize("targets", [{"layers": "upper"}, {"nothing": 1}, {"matrices": []}])
def test_config_with_invalid_targets(folder, targets):
    config = _config(folder)
    config["targets"] = targets
    _write_config(folder, config)
    with pytest.raises(AdapterError) as info:
        read_adapter_config(folder)
    with pytest.raises(ValidationError) as pydantic_error:
        TargetSpec(**targets)
    first_line = str(pydantic_error.value).splitlines()[0]  # "N validation error(s) for TargetSpec"
    assert first_line.endswith("for TargetSpec")
    assert _message(info) == (f"{folder / 'adapter_config.json'}: field 'targets' is invalid ({first_line}); the file "
                              "is damaged or was edited")


def test_config_keeps_unknown_fields(folder):
    config = _config(folder)
    config["note"] = {"by": "hand"}
    _write_config(folder, config)
    assert read_adapter_config(str(folder))["note"] == {"by": "hand"}


# --- the checks on their own -------------------------------------------------------------------------
def test_check_finite_names_the_first_offender():
    ok = torch.ones(3)
    check_finite({"a": ok, "b": torch.zeros(0)}, "here")
    bad = torch.tensor([1.0, float("nan"), float("-inf"), 2.0])
    with pytest.raises(AdapterError) as info:
        check_finite({"a": ok, "b": bad, "c": bad}, "here")
    assert _message(info).startswith("here: tensor b holds 2 non-finite value(s) (NaN/inf)")
    with pytest.raises(AdapterError, match=r"^here: tensor a has dtype int64; "):
        check_finite({"a": torch.ones(2, dtype=torch.int64)}, "here")


def test_sigma_range_limit_is_relative_to_the_base_scale_of_at_least_one():
    base = {"a": torch.tensor([4.0, 1.0]), "small": torch.tensor([0.01]), "empty": torch.zeros(0)}
    check_sigma_range({"a": torch.tensor([-4000.0, 0.0])}, base, "w", "fix")  # exactly the limit
    check_sigma_range({"small": torch.tensor([1000.0])}, base, "w", "fix")    # scale 0.01 counts as 1
    check_sigma_range({"empty": torch.tensor([1000.0])}, base, "w", "fix")    # no base values: scale 1
    check_sigma_range({"unknown": torch.tensor([1e30])}, base, "w", "fix")    # names are load_sigmas' job
    check_sigma_range({"a": torch.zeros(0)}, base, "w", "fix")
    for sigmas in ({"a": torch.tensor([1.0, -4001.0])}, {"small": torch.tensor([1001.0])},
                   {"empty": torch.tensor([1001.0])}):
        with pytest.raises(AdapterError):
            check_sigma_range(sigmas, base, "w", "fix")
    with pytest.raises(AdapterError) as info:
        check_sigma_range({"small": torch.tensor([2500.0])}, base, "w", "fix it")
    assert _message(info) == ("w: tensor small holds σ = 2.5e+03, 2.5e+03 times its base matrix's scale (1; at most "
                              "1000 times is accepted, or the model's outputs overflow); fix it")
    with pytest.raises(AdapterError) as info:  # a skipped name does not end the check
        check_sigma_range({"unknown": torch.ones(1), "a": torch.tensor([8000.0])}, base, "w", "fix it")
    assert _message(info) == ("w: tensor a holds σ = 8e+03, 2e+03 times its base matrix's scale (4; at most "
                              "1000 times is accepted, or the model's outputs overflow); fix it")
