"""The bundle config check (medclipsvd/export/bundle_check.py): what `export` writes passes; every edit that
could make MONAI's runner run code is refused with one line naming the file and the item or step."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from medclipsvd.data.preprocess_steps import PreprocessConfigError
from medclipsvd.export.bundle_check import BundleConfigError, check_config_file, check_inference_config

SRC = "b/configs/inference.json"
STEPS = [{"name": "ScaleIntensityRanged", "args": {"a_min": 0.0, "a_max": 1.0, "b_min": 0.05, "b_max": 0.95}},
         {"name": "RandGaussianNoised", "args": {"prob": 0.5, "std": 0.01}}]


@pytest.fixture(scope="module")
def written() -> dict:
    from medclipsvd.export.monai_bundle import inference_config

    view = {"slices": "slices:3", "window": None, "axis": "axial", "dicom_frames": "middle"}
    return inference_config("tiny-clip", ["benign", "malignant"], 32, (0.48, 0.45, 0.40), (0.26, 0.26, 0.27),
                            view, STEPS)


def test_what_export_writes_passes(written):
    check_inference_config(written, SRC)
    check_inference_config({"input": "/data/x.nii.gz", "bundle_root": "."}, SRC)  # a partial file, as MONAI merges
    targets = [t["_target_"] for t in written["preprocessing"]["transforms"]]
    assert targets == ["medclipsvd.export.runtime.LoadInputd", "monai.transforms.ScaleIntensityRanged",
                       "medclipsvd.export.runtime.ClipEvalTransformd"]  # Rand* left out of the bundle


def _edited(written, edit) -> dict:
    data = copy.deepcopy(written)
    edit(data)
    return data


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d.update(device="$__import__('os').system('true')"), "item 'device' differs"),
    (lambda d: d.update(run=["$print(1)"]), "item 'run' differs"),
    (lambda d: d["imports"].append("$import antigravity"), "item 'imports' differs"),
    (lambda d: d["network_def"].update(_target_="os.system"), "item 'network_def' differs"),
    (lambda d: d.update(initialize=["$print(1)"]), "item 'initialize' differs"),
    (lambda d: d.update(classnames=["$__import__('os')", "b"]), "item 'classnames' must be a list of plain strings"),
    (lambda d: d.update(backbone="@network_def"), "item 'backbone' must be a plain string"),
    (lambda d: d.update(input="%configs/other.json#x"), "item 'input' must be a plain string"),
    (lambda d: d["preprocessing"].update(_mode_="debug"), "must be a monai.transforms.Compose"),
    (lambda d: d["preprocessing"]["transforms"][0].update(reader="subprocess.run"), "the first transform"),
    (lambda d: d["preprocessing"]["transforms"][0].update(window="$print(1)"), "the first transform"),
    (lambda d: d["preprocessing"]["transforms"][-1].update(mean="$[0.5]*3"), "the last transform"),
    (lambda d: d["preprocessing"]["transforms"].pop(), "the last transform"),
])
def test_edits_are_refused(written, edit, expected):
    with pytest.raises(BundleConfigError) as e:
        check_inference_config(_edited(written, edit), SRC)
    assert str(e.value).startswith(f"{SRC}: ") and expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("step,expected", [
    ({"_target_": "monai.transforms.LoadImaged", "keys": "image", "reader": "subprocess.run"},
     "preprocess step 2 'LoadImaged' is not allowed"),
    ({"_target_": "subprocess.run", "args": ["true"]}, "preprocess step 2 'subprocess.run' is not allowed"),
    ({"_target_": "monai.transforms.Lambdad", "keys": "image", "func": "$lambda d: d"},
     "preprocess step 2 'Lambdad' is not allowed"),
    ({"_target_": "monai.transforms.Identityd", "keys": "image", "_mode_": "callable"},
     "preprocess step 2 'Identityd': argument '_mode_' is not allowed"),
    ({"_target_": "monai.transforms.Zoomd", "keys": "image", "zoom": "$1.5"},
     "argument 'zoom' must be a number"),
    ({"_target_": "monai.transforms.Identityd", "keys": "@classnames"}, "argument 'keys' must be \"image\""),
])
def test_preprocess_steps_of_the_bundle_are_held_to_the_allow_list(written, step, expected):
    data = _edited(written, lambda d: d["preprocessing"]["transforms"].insert(2, step))
    with pytest.raises(PreprocessConfigError) as e:
        check_inference_config(data, SRC)
    assert str(e.value).startswith(f"{SRC}: ") and expected in str(e.value)


def test_config_file_is_read_as_bounded_data(written, tmp_path):
    good = tmp_path / "inference.json"
    good.write_text(json.dumps(written))
    check_config_file(good)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 1000 + "]" * 1000)
    with pytest.raises(BundleConfigError, match="levels deep"):
        check_config_file(deep)
    dup = tmp_path / "x.yaml"
    dup.write_text("input: a\ninput: b\n")
    with pytest.raises(BundleConfigError, match="duplicate key 'input'"):
        check_config_file(dup)


def test_load_network_checks_the_bundle_config_next_to_the_weights(tmp_path, written):
    """Outside MONAI's runner (e.g. a script loading the network) the check raises instead of exiting."""
    from medclipsvd.export.runtime import load_network

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text(json.dumps({**written, "device": "$print(1)"}))
    with pytest.raises(BundleConfigError, match="item 'device' differs"):
        load_network(tmp_path / "models" / "model.safetensors", "tiny-clip")


def test_export_refuses_class_names_monai_would_evaluate(trained_adapter, tmp_path):
    from medclipsvd.export.monai_bundle import ExportError, export_monai_bundle

    run = Path(shutil.copytree(trained_adapter.parent, tmp_path / "run"))
    results = json.loads((run / "results.json").read_text())
    results["classnames"] = ["$__import__('os').getcwd()", *results["classnames"][1:]]
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(ExportError, match="item 'classnames' must be a list of plain strings"):
        export_monai_bundle(run / "adapter", tmp_path / "bundle", check=False)
    assert not (tmp_path / "bundle").exists()
