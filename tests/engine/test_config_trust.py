"""Configuration values that used to be taken silently (issue 16, item 8): true/false where a number belongs,
a schedule floor (eta_min) above the learning rate, an empty output path, and a run folder that already
holds a run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from medclipsvd.engine.config import ConfigError, HParams, Pipeline

BASE = {"name": "p", "description": "d", "suite": "custom", "dataset": "custom", "backbone": "tiny-clip"}


@pytest.mark.parametrize("field", ["train_epochs", "batch_size", "n_iters", "shots"])
@pytest.mark.parametrize("value", [True, False])
def test_hparams_integers_refuse_booleans(field, value):
    with pytest.raises(ValidationError, match="not a number"):
        HParams(**{field: value})


@pytest.mark.parametrize("field", ["lr", "weight_decay", "eta_min"])
def test_hparams_floats_refuse_booleans(field):
    with pytest.raises(ValidationError, match="not a number"):
        HParams(**{field: True})


def test_numbers_still_parse_as_before():
    hp = HParams(lr="2e-3", train_epochs=5.0, batch_size=8, shots=4, eta_min=0)  # YAML reads 2e-3 as a string
    assert (hp.lr, hp.train_epochs, hp.batch_size, hp.shots, hp.eta_min) == (0.002, 5, 8, 4, 0.0)
    assert Pipeline(**BASE, shots=16).shots == 16
    assert Pipeline(**BASE, augmentation={"hflip": False}).augmentation.hflip is False


def test_pipeline_shots_true_and_hflip_one_are_refused():
    with pytest.raises(ValidationError, match="true is not a number"):
        Pipeline(**BASE, shots=True)
    with pytest.raises(ValidationError, match="boolean"):
        Pipeline(**BASE, augmentation={"hflip": 1})
    with pytest.raises(ValidationError, match="not a number"):
        Pipeline(**BASE, augmentation={"random_resized_crop_scale": [True, 1.0]})


@pytest.mark.parametrize("option,value", [("shots", True), ("seed", False), ("max_steps", True),
                                          ("checkpoint_every", True), ("num_workers", False),
                                          ("eval_batch_size", True), ("lr", True)])
def test_run_options_refuse_booleans_naming_the_option(option, value):
    with pytest.raises(ConfigError, match="not a number") as info:
        _spec(**{option: value})
    assert str(info.value).startswith(f"--{option.replace('_', '-')} {value!r}: ") or option == "eval_batch_size"
    assert getattr(_spec(**{option: 1 if option != "lr" else 0.1}), option) == (1 if option != "lr" else 0.1)


def test_eta_min_above_lr_is_refused_naming_both():
    with pytest.raises(ValidationError) as info:
        HParams(lr=0.002, eta_min=933)
    msg = str(info.value)
    assert "eta_min 933" in msg and "lr 0.002" in msg and "climb" in msg
    assert HParams(lr=0.002, eta_min=0.002).eta_min == 0.002  # equal: a constant rate, not a climb
    with pytest.raises(ValidationError, match="finite"):
        HParams(eta_min=float("inf"))


def test_eta_min_above_lr_in_a_pipeline_file(tmp_path):
    from medclipsvd.engine.config import load_pipeline

    p = tmp_path / "p.yaml"
    p.write_text("name: p\ndescription: d\nsuite: custom\ndataset: custom\nbackbone: tiny-clip\n"
                 "hparams:\n  lr: 0.002\n  eta_min: 933\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(str(p))
    msg = str(info.value)
    assert "p.yaml" in msg and "hparams: eta_min 933 is larger than lr 0.002" in msg and "\n" not in msg


def _spec(**kw):
    from medclipsvd.engine.spec import RunSpec

    return RunSpec(dataset="custom", hp=kw.pop("hp", HParams()), **kw)


def test_run_spec_checks_the_rate_it_will_train_with():
    with pytest.raises(ConfigError, match=r"eta_min 1e-06 is larger than --lr 1e-07"):
        _spec(lr=1e-7)
    _spec(lr=1e-3)
    # a baseline's own default rate (full: 1e-5) against a floor set for σ-only training
    floor = HParams(lr=0.01, eta_min=5e-5)
    with pytest.raises(ConfigError, match="the full default learning rate"):
        _spec(hp=floor, method="full")
    _spec(hp=floor, method="zero_shot")  # trains nothing: no schedule


def test_trainer_refuses_a_climbing_schedule_on_every_route(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from toy import ToyBackbone, ToyImages

    from medclipsvd.engine.trainer import TrainSettings, train
    from medclipsvd.errors import MedClipSVDError

    bb = ToyBackbone()
    settings = TrainSettings(lr=1e-4, eta_min=933.0, total_steps=2, t_max=2, batch_size=6, device="cpu",
                             progress=False)
    with pytest.raises(MedClipSVDError, match="eta_min 933 is larger than lr 0.0001"):
        train(bb, bb.trainable(), ToyImages(), ["a", "b", "c"], "a {}", settings, text_trainable=True)


@pytest.mark.parametrize("output", ["", "   "])
def test_run_spec_refuses_an_empty_output(output):
    with pytest.raises(ConfigError, match="current folder"):
        _spec(output=output)


def test_check_run_folder(tmp_path):
    from medclipsvd.engine.run_folder import OutputExistsError, check_run_folder

    out = tmp_path / "run"
    check_run_folder(out)  # a new folder
    out.mkdir()
    (out / "plots").mkdir()
    check_run_folder(out)  # only plots of a run killed early: nothing worth keeping is replaced
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="interrupted run"):
        check_run_folder(out)
    check_run_folder(out, resume=True)
    check_run_folder(out, force=True)
    (out / "results.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="completed run"):
        check_run_folder(out)
    with pytest.raises(OutputExistsError, match="nothing to resume"):
        check_run_folder(out, resume=True)
    check_run_folder(out, force=True)
