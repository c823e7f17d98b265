"""`medclipsvd export --format hf`: the adapter files as trained plus a model card whose fields come from the run's
results.json (checked with planted values that no computation would produce), nothing of the training machine's
paths on it, and one-line errors."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

PLANTED = {"accuracy": 87.65, "balanced_accuracy": 84.32, "macro_f1": 83.21, "auroc_ovr": 0.9321, "ece": 0.0456,
           "n": 123, "ci95": {"level": 0.95, "n_resamples": 777, "seed": 1, "method": "stratified percentile bootstrap",
                              "accuracy": [81.25, 92.5], "balanced_accuracy": [78.5, 90.0], "auroc_ovr": [0.9, 0.96]}}


def cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from medclipsvd.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medclipsvd", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture
def run(trained_adapter, tmp_path) -> Path:
    """A copy of the trained run whose results.json carries planted values."""
    run = tmp_path / "run"
    shutil.copytree(trained_adapter, run / "adapter")
    results = json.loads((trained_adapter.parent / "results.json").read_text())
    results.update(dataset="planted-dataset", shots=7, seed=13, n_train=21, classnames=["alpha cyst", "beta", "gamma"],
                   template="an ultrasound of {}.")
    results["eval"] = {"test": {**PLANTED, "study": {**PLANTED, "n": 41, "accuracy": 90.24}}}
    (run / "results.json").write_text(json.dumps(results))
    return run


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_card_fields_come_from_results_json(run, tmp_path, monkeypatch, capsys):
    code, out, err = cli(["export", "--adapter", str(run / "adapter"), "--format", "hf", "--output",
                          str(tmp_path / "share")], monkeypatch, capsys)
    assert code == 0, err
    share = tmp_path / "share"
    for name in ("adapter_config.json", "adapter.safetensors"):
        assert (share / name).read_bytes() == (run / "adapter" / name).read_bytes()
    card = (share / "README.md").read_text()
    meta = _front_matter(card)
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    m = meta["medclipsvd"]
    assert meta["library_name"] == "medclipsvd"
    assert m["backbone"] == adapter_config["backbone"]["name"] == "tiny-clip"
    assert m["backbone_fingerprint"] == adapter_config["backbone"]["fingerprint"]
    assert m["trainable_parameters"] == adapter_config["trainable_parameters"] == 4608
    assert (m["dataset"], m["shots"], m["seed"]) == ("planted-dataset", 7, 13)
    assert m["classes"] == ["alpha cyst", "beta", "gamma"]
    test = m["results"]["test"]
    assert (test["n"], test["accuracy"], test["accuracy_ci95"]) == (123, 87.65, [81.25, 92.5])
    assert (test["auroc_ovr"], test["auroc_ovr_ci95"], test["ece"]) == (0.9321, [0.9, 0.96], 0.0456)
    assert m["results"]["test (per study)"]["accuracy"] == 90.24
    body = card.split("---\n", 2)[2]
    assert "| test | 123 | 87.65 % | 81.25 % – 92.50 % | 84.32 % | 78.50 % – 90.00 % | 83.21 % | 0.9321 | " \
           "0.9000 – 0.9600 | 0.0456 |" in body
    assert "777 resamples" in body and "4,608" in body and "`an ultrasound of {}.`" in body
    assert "alpha cyst, beta, gamma" in body and "shots per class | 7" in body
    assert "Not a medical device" in body and "Research use only" in body


def test_card_holds_no_path_of_the_training_machine(run, tmp_path):
    from medclipsvd.export.hf_card import export_hf

    results = json.loads((run / "results.json").read_text())
    out = export_hf(run / "adapter", tmp_path / "share")
    text = "".join(p.read_text(errors="ignore") for p in out.iterdir() if p.suffix in (".md", ".json"))
    for secret in (results["run"]["data_root"], results["spec"]["output"], str(run)):
        assert secret not in text


def test_existing_output_and_missing_results_are_one_line_errors(run, tmp_path, monkeypatch, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    code, out, err = cli(["export", "--adapter", str(run / "adapter"), "--format", "hf", "--output",
                          str(tmp_path / "busy")], monkeypatch, capsys)
    assert code == 2 and "not empty" in err and (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    (run / "results.json").unlink()
    code, out, err = cli(["export", "--adapter", str(run / "adapter"), "--format", "hf", "--output",
                          str(tmp_path / "new")], monkeypatch, capsys)
    assert code == 2 and "results.json" in err and "Traceback" not in err and not (tmp_path / "new").exists()
    code, out, err = cli(["export", "--adapter", str(run / "adapter"), "--format", "onnx", "--output",
                          str(tmp_path / "new")], monkeypatch, capsys)
    assert code == 2 and "monai-bundle or hf" in err


@pytest.mark.parametrize("record", ["method.json", "adapter_config.json"])
def test_lora_and_full_records_are_read_from_either_file(record, tmp_path):
    """A LoRA / full folder's record: method.json (earlier versions) or adapter_config.json with a "method" key
    (the one adapter folder format); the card names its method and base, not σ."""
    from medclipsvd.export.hf_card import _adapter_info

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / record).write_text(json.dumps({"method": "lora", "backbone": "tiny-clip", "fingerprint": "f" * 32,
                                              "layers": "all", "matrices": ["q", "v"]}))
    info = _adapter_info(adapter)
    assert info["method"] == "lora" and info["trainable"] is None
    assert info["base"] == {"name": "tiny-clip", "source": None, "fingerprint": "f" * 32}
    assert info["targets"] == {"layers": "all", "matrices": ["q", "v"]}
