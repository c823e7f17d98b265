"""Issue 17 item 1: a pipeline carries its input policy as one nested `input:` InputPolicy (the loose keys of
older pipelines still read into it), and the CLI turns its hospital flags into one checked value whose
errors name the flag."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medclipsvd.data.volumes.policy import InputPolicy
from medclipsvd.engine.config import ConfigError, load_pipeline

REPO = Path(__file__).resolve().parents[2]
CT = REPO / "pipelines" / "ct_study_folder.yaml"
# what pipelines/ct_study_folder.yaml says, typed out here
CT_POLICY = InputPolicy(slices="slices:5", window="multi", axis="axial", dicom_frames="volume")


def _write(tmp_path, drop=(), **keys) -> str:
    p = yaml.safe_load(CT.read_text())
    for k in drop:
        p.pop(k, None)
    p.update(keys)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    return str(path)


def test_pipeline_input_is_one_input_policy():
    p = load_pipeline("ct_study_folder")
    assert p.input == CT_POLICY
    assert p.load_options() == {"slices": "slices:5", "window": "multi", "axis": "axial", "dicom_frames": "volume",
                                "split_file": None, "series": None, "on_bad_series": "error"}


def test_loose_keys_of_older_pipelines_are_read_into_input(tmp_path):
    old = _write(tmp_path, drop=("input",), slices="slices:5", window="multi", axis="axial", dicom_frames="volume",
                 modality="CT")
    assert load_pipeline(old).input == InputPolicy(slices="slices:5", window="multi", axis="axial",
                                                   dicom_frames="volume", modality="CT")
    partly = _write(tmp_path, input={"slices": "all"}, window="lung")  # nested and loose keys together
    assert load_pipeline(partly).input == InputPolicy(slices="all", window="lung")


@pytest.mark.parametrize("keys,needles", [
    ({"input": {"slices": "all"}, "slices": "middle"}, ["slices is given twice", "under input:"]),
    ({"input": {"windw": "lung"}}, ["input", "unknown key(s) ['windw']", "dicom_frames"]),
    ({"input": {"window": "livr"}}, ["input", "window 'livr'"]),
    ({"input": {"modality": "PET"}}, ["input", "modality 'PET'", "CT or MR"]),
    ({"input": ["slices:5"]}, ["input", "expected a mapping"]),
    ({"window": "livr"}, ["input", "window 'livr'"]),  # a loose key is checked as the nested one
])
def test_bad_input_keys_are_one_error_naming_the_key(tmp_path, keys, needles):
    with pytest.raises(ConfigError) as exc:
        load_pipeline(_write(tmp_path, drop=("input",), **keys))
    msg = str(exc.value)
    assert "\n" not in msg and "p.yaml is invalid" in msg
    for needle in needles:
        assert needle in msg, msg


def test_command_line_flags_apply_over_the_pipeline_input(tmp_path):
    from medclipsvd.cli.hospital_options import input_flags
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline

    flags = input_flags(window="lung", modality="ct", split_file=tmp_path / "s.json")
    assert flags.policy == {"window": "lung", "modality": "ct"}  # only what was given
    spec = spec_from_pipeline("ct_study_folder", data_root=str(tmp_path), output=str(tmp_path / "out"),
                              volume=flags.load_kwargs())
    assert spec.policy == InputPolicy(slices="slices:5", window="lung", axis="axial", dicom_frames="volume",
                                      modality="ct")
    assert spec.split_file == str(tmp_path / "s.json")
    assert flags.over(CT_POLICY) == spec.policy
    assert input_flags().over(CT_POLICY) == CT_POLICY and input_flags().load_kwargs() == {}


@pytest.mark.parametrize("kwargs,needle", [
    ({"window": "livr"}, "--window livr: "),
    ({"slices": "every"}, "--slices every: "),
    ({"axis": "oblique"}, "--axis oblique: "),
    ({"dicom_frames": "some"}, "--dicom-frames some: "),
    ({"modality": "PET"}, "--modality PET: "),
    ({"series": ["per_study=newest"]}, "--series: "),
    ({"on_bad_series": "ignore"}, "--on-bad-series ignore"),
])
def test_input_flags_name_the_bad_flag(kwargs, needle):
    from medclipsvd.cli.hospital_options import input_flags
    from medclipsvd.errors import DataError

    with pytest.raises(DataError) as exc:
        input_flags(**kwargs)
    assert str(exc.value).startswith(needle), str(exc.value)


def test_every_shipped_pipeline_loads():
    from medclipsvd.engine.config import list_pipelines

    for name in list_pipelines():  # a shipped pipeline the model refuses fails here
        load_pipeline(name)


def test_modality_override_is_part_of_the_run_policy_and_reaches_the_loader(tmp_path):
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.steps import load_kwargs

    spec = spec_from_pipeline("ct_study_folder", data_root=str(tmp_path), output=str(tmp_path / "out"),
                              volume={"modality": "MR"})
    assert spec.policy.modality == "MR" and spec.params()["modality"] == "MR"
    assert spec.load_kwargs()["modality"] == "MR"
    # evaluating a saved adapter reads the recorded policy back into the loader's keywords
    assert load_kwargs(spec.input_policy())["modality"] == "MR"
    plain = spec_from_pipeline("ct_study_folder", data_root=str(tmp_path), output=str(tmp_path / "o2"))
    assert "modality" not in plain.params() and "modality" not in load_kwargs(plain.input_policy())


def test_recorded_modality_reaches_serving_and_the_bundle_config():
    from medclipsvd.export.bundle_check import check_inference_config
    from medclipsvd.export.monai_bundle import inference_config

    record = {"input": InputPolicy(window="brain", modality="CT").to_dict(), "dataset": "custom"}
    view = InputPolicy.from_run(record)  # what serving (Predictor, local_model_config) reads back
    assert view == InputPolicy(window="brain", modality="CT")
    # a run recorded before the override named the dataset's modality in "run": not an override
    assert InputPolicy.from_run({"modality": "unknown", "slices": "all"}) == InputPolicy(slices="all")
    config = inference_config("tiny-biomedclip", ["a", "b"], 224, [0.5] * 3, [0.5] * 3, view.to_dict(), [])
    loader = config["preprocessing"]["transforms"][0]
    assert loader["modality"] == "CT" and loader["window"] == "brain"
    check_inference_config(config, "inference.json")  # the bundle runtime accepts it (raises if not)
