"""Safety: a model folder is data, never code (issue 10, item 3). `medclipsvd predict` builds the predictor
from the installed package and the folder's JSON + safetensors, checked against the sha256 recorded at
registration (MLmodel metadata and model version tag); MLmodel carries no absolute machine paths."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
MODEL_NAME = "tiny-chest"  # registered by the session fixture `trained_run` (conftest.py)
from tracking_synth import CLASSES, _pattern, write_png

TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import adapt, save_adapter, sigma_parameters
    from medclipsvd.tracking.registry import build_model_config, save_pyfunc

    work = tmp_path_factory.mktemp("model-work")
    bb = adapt(load_backbone("tiny-biomedclip"), "paper")
    with torch.no_grad():
        for p in sigma_parameters(bb).values():
            p.mul_(1.1)
    adapter = save_adapter(bb, work / "adapter")
    config = build_model_config(adapter, {"classnames": list(CLASSES), "template": TEMPLATE}, "run-x")
    return save_pyfunc(config, adapter, work)


@pytest.fixture
def fresh_copy(model_dir, tmp_path):
    import shutil

    return Path(shutil.copytree(model_dir, tmp_path / "model"))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return str(write_png(tmp_path_factory.mktemp("img") / "a.png", _pattern(1, 3)))


class Outcome:
    def __init__(self, exit_code: int, output: str):
        self.exit_code, self.output = exit_code, output


def _predict(model: str, *files: str, uri: str | None = None, extra: tuple[str, ...] = ()) -> Outcome:
    """`medclipsvd predict` in this process; our errors as the CLI's main() reports them (status 2, one line)."""
    from typer.testing import CliRunner

    from medclipsvd.cli.app import app
    from medclipsvd.errors import MedClipSVDError

    args = ["predict", "--model", model, *files, *extra] + (["--tracking-uri", uri] if uri else [])
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    if isinstance(result.exception, MedClipSVDError):
        assert "\n" not in str(result.exception)
        return Outcome(2, result.output + f"error: {result.exception}")
    return Outcome(result.exit_code, result.output)


def test_predict_never_runs_code_from_the_model_folder(fresh_copy, image, tmp_path):
    marker = tmp_path / "code-ran"
    with open(fresh_copy / "pyfunc_model.py", "a") as fh:  # what an attacker with write access would add
        fh.write(f"\nopen({str(marker)!r}, 'w').write('pwned')\n")
    (fresh_copy / "conftest.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    # trusted explicitly (a folder's only digest is inside it): the point here is that its code never runs
    result = _predict(str(fresh_copy), image, extra=("--trust-unverified",))
    assert result.exit_code == 0, result.output[-2000:]
    assert "benign" in result.output or "malignant" in result.output
    assert not marker.exists()


def test_mlmodel_has_no_absolute_paths_and_records_hashes(model_dir):
    import yaml

    from medclipsvd.tracking.model_files import HASHES_KEY

    text = (model_dir / "MLmodel").read_text()
    assert str(model_dir.parent) not in text and "/work/" not in text, text
    doc = yaml.safe_load(text)
    flavor = doc["flavors"]["python_function"]
    assert flavor["model_code_path"] == "pyfunc_model.py"
    assert all("uri" not in spec for spec in flavor["artifacts"].values())
    hashes = doc["metadata"][HASHES_KEY]
    assert set(hashes) == {"artifacts/model_config.json", "artifacts/adapter/adapter_config.json",
                           "artifacts/adapter/adapter.safetensors"}


@pytest.mark.parametrize("tamper", ["config", "adapter_config", "extra_file"])
def test_altered_model_files_are_refused(fresh_copy, image, tamper):
    arts = fresh_copy / "artifacts"
    if tamper == "config":  # a well-formed, plausible change: swap the class names
        cfg = json.loads((arts / "model_config.json").read_text())
        cfg["classnames"] = cfg["classnames"][::-1]
        (arts / "model_config.json").write_text(json.dumps(cfg))
    elif tamper == "adapter_config":
        cfg = json.loads((arts / "adapter" / "adapter_config.json").read_text())
        cfg["preset"] = "attention"
        (arts / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    else:
        (arts / "adapter" / "__init__.py").write_text("print('hello')\n")
    result = _predict(str(fresh_copy), image)
    assert result.exit_code == 2, result.output[-2000:]
    err = result.output
    assert "sha256" in err and "refusing to load" in err and "Traceback" not in err, err


def test_pyfunc_loading_checks_the_data_files_too(fresh_copy):
    import mlflow

    from medclipsvd.tracking.model_files import ModelIntegrityError

    cfg_path = fresh_copy / "artifacts" / "model_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["template"] = "an x-ray of {}."
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelIntegrityError, match="model_config.json"):
        mlflow.pyfunc.load_model(str(fresh_copy))


def test_artifact_paths_may_not_leave_the_model_folder(fresh_copy, image):
    import yaml

    doc = yaml.safe_load((fresh_copy / "MLmodel").read_text())
    doc["flavors"]["python_function"]["artifacts"]["config"]["path"] = "../../../etc/passwd"
    (fresh_copy / "MLmodel").write_text(yaml.safe_dump(doc))
    result = _predict(str(fresh_copy), image)
    assert result.exit_code == 2 and "outside the model folder" in result.output


def test_registered_version_tags_hold_the_hashes_and_are_checked(trained_run, image):
    from mlflow import MlflowClient

    from medclipsvd.tracking.model_files import HASHES_TAG

    client = MlflowClient(trained_run.server.uri)
    version = client.get_model_version_by_alias(MODEL_NAME, "champion")
    recorded = json.loads(version.tags[HASHES_TAG])
    assert "artifacts/adapter/adapter.safetensors" in recorded
    uri = f"models:/{MODEL_NAME}@champion"
    ok = _predict(uri, image, uri=trained_run.server.uri)
    assert ok.exit_code == 0, ok.output[-2000:]
    forged = {**recorded, "artifacts/model_config.json": "0" * 64}
    client.set_model_version_tag(MODEL_NAME, version.version, HASHES_TAG, json.dumps(forged))
    try:
        result = _predict(uri, image, uri=trained_run.server.uri)
        assert result.exit_code == 2 and HASHES_TAG in result.output, result.output[-2000:]
    finally:
        client.set_model_version_tag(MODEL_NAME, version.version, HASHES_TAG, version.tags[HASHES_TAG])
