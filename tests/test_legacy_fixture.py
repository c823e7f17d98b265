"""Folders saved by medclipsvd 0.1.0 (tests/fixtures/legacy_v0_1, written before the architecture step)
still load and give the numbers they gave then (issue 17: no behaviour change)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_v0_1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TOL = dict(rtol=1e-4, atol=1e-5)  # float32 kernels differ across CPUs; a changed model differs far more


@pytest.fixture
def fixture_copy(tmp_path):
    dest = tmp_path / "legacy"
    shutil.copytree(FIXTURE, dest)
    return dest


def _images(root: Path) -> list[str]:
    return [str(root / p) for p in EXPECTED["images"]]


@pytest.mark.parametrize("run", sorted(EXPECTED["runs"]))
def test_saved_run_predicts_as_before(run, fixture_copy):
    from medclipsvd.serving.predictor import Predictor

    probs = Predictor.from_adapter(str(fixture_copy / run / "adapter")).predict_proba(_images(fixture_copy))
    np.testing.assert_allclose(np.asarray(probs), EXPECTED["runs"][run]["probabilities"], **TOL)


@pytest.mark.parametrize("run", sorted(EXPECTED["runs"]))
def test_saved_adapter_gives_the_same_logits(run, fixture_copy):
    import torch

    from medclipsvd.backbones import load_backbone
    from medclipsvd.methods.registry import load_trained
    from medclipsvd.svd import merge

    exp = EXPECTED["runs"][run]
    results = json.loads((fixture_copy / run / "results.json").read_text())
    bb = load_backbone(exp["backbone"])
    assert load_trained(bb, fixture_copy / run / "adapter") == exp["method"]
    if exp["method"] == "svd":
        merge(bb)
    bb.eval()
    x = torch.linspace(-1, 1, 3 * 224 * 224).reshape(1, 3, 224, 224)[:, :, : bb.image_size, : bb.image_size]
    tokens = bb.tokenize([results["run"]["template"].format(c) for c in results["classnames"]])
    with torch.no_grad():
        logits = bb(x, tokens)
    np.testing.assert_allclose(logits.numpy(), exp["logits"], **TOL)


def test_saved_model_folder_predicts_as_before(fixture_copy):
    from medclipsvd.tracking.model_files import load_predictor

    # a local folder carries no digest stored outside it: 0.1.0 folders load only when trusted explicitly
    predictor = load_predictor(str(fixture_copy / "model"), trust_unverified=True)
    probs = predictor.predict_proba(_images(fixture_copy))
    np.testing.assert_allclose(np.asarray(probs), EXPECTED["model"]["probabilities"], **TOL)
