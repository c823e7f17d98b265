"""End to end on tiny-clip / tiny-biomedclip and a synthetic DICOM+PNG folder: train -> adapter -> results;
`evaluate` on the saved adapter reproduces the test accuracy; baselines run in the same harness."""
import json

import pytest
import torch

from medclipsvd.engine.config import HParams
from medclipsvd.methods import LoRADelta, load_trained, prepare_method
from medclipsvd.engine.adapter_evaluation import evaluate_adapter
from medclipsvd.engine.pipeline_spec import spec_from_pipeline
from medclipsvd.engine.run import run_experiment
from medclipsvd.engine.synthetic import fake_tag_values
from medclipsvd.errors import MedClipSVDError


@pytest.fixture(scope="module")
def base_clip():
    from medclipsvd.backbones import load_backbone

    bb = load_backbone("tiny-clip")
    bb.fingerprint()
    return bb


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    spec = spec_from_pipeline("demo", data_root=str(synthetic_root), output=str(out), backbone="tiny-clip",
                              device="cpu", max_steps=4, lr=0.05, progress=False, shots=2)
    return run_experiment(spec), out


def test_train_writes_adapter_results_plots(trained):
    res, out = trained
    assert (out / "adapter" / "adapter.safetensors").exists()
    assert (out / "plots" / "confusion_test.png").stat().st_size > 0
    assert (out / "plots" / "training_curve.png").stat().st_size > 0
    for fig in ("roc_test.png", "reliability_test.png"):  # the clinical figures (engine/plots.py)
        assert (out / "plots" / fig).stat().st_size > 0
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"]["test"] == res["eval"]["test"]["accuracy"]
    assert res["train"]["steps"] == 4 and res["train"]["text_trainable"]
    m = res["eval"]["test"]
    assert m["n"] == sum(m["support"].values()) > 0
    assert sum(map(sum, m["confusion_matrix"])) == m["n"]
    assert res["mode"] == "improved" and m["ci95"]["n_resamples"] >= 1000
    assert m["ci95"]["accuracy"][0] <= m["accuracy"] <= m["ci95"]["accuracy"][1]
    assert set(m["per_class"]) == set(m["support"])
    cm = m["confusion_matrix"]  # rows true, columns predicted: every rate by hand from the matrix
    for i, name in enumerate(m["classnames"]):
        tp = cm[i][i]
        fn = sum(cm[i]) - tp
        fp = sum(row[i] for row in cm) - tp
        tn = m["n"] - tp - fn - fp
        r = m["per_class"][name]
        assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (tp, fn, fp, tn)
        assert r["specificity"] == (pytest.approx(100 * tn / (tn + fp)) if tn + fp else None)
        assert r["sensitivity"] == (pytest.approx(100 * tp / (tp + fn)) if tp + fn else None)
    assert m["accuracy"] == pytest.approx(100 * sum(cm[i][i] for i in range(len(cm))) / m["n"])
    # no DICOM patient tag of the synthetic inputs appears in the results
    text = (out / "results.json").read_text()
    assert not [v for v in fake_tag_values(18) if v in text]


def test_evaluate_adapter_reproduces_accuracy(trained, tmp_path):
    res, out = trained
    ev, path = evaluate_adapter(str(out / "adapter"), device="cpu", output=str(tmp_path))
    assert ev["eval"]["test"]["accuracy"] == res["eval"]["test"]["accuracy"]
    assert ev["eval"]["test"]["confusion_matrix"] == res["eval"]["test"]["confusion_matrix"]
    assert path.exists() and ev["method"] == "svd"


def test_evaluate_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(MedClipSVDError, match="does not exist"):
        evaluate_adapter(str(tmp_path / "nope"))


@pytest.mark.parametrize("method", ["zero_shot", "linear_probe"])
def test_untrained_baselines(method, synthetic_root, tmp_path):
    spec = spec_from_pipeline("demo", data_root=str(synthetic_root), output=str(tmp_path), backbone="tiny-clip",
                              device="cpu", method=method, progress=False, shots=2)
    res = run_experiment(spec)
    test = res["eval"]["test"]
    cm = test["confusion_matrix"]
    from medclipsvd.data import load_dataset

    n_test = len(load_dataset("custom", synthetic_root).test)  # the test split, counted independently
    assert test["n"] == n_test == sum(map(sum, cm))
    assert res["summary"]["test"] == pytest.approx(100 * sum(cm[i][i] for i in range(len(cm))) / n_test)
    assert not (tmp_path / "adapter").exists()
    if method == "linear_probe":
        assert res["train"]["n_features"] == 64


@pytest.mark.parametrize("method,backbone,expected", [
    # LoRA r=2 on q, k, v: 2*(64+64) per matrix x 3 x 6 layers x 2 towers
    ("lora", "tiny-clip", 2 * (64 + 64) * 3 * 6 * 2),
    # full fine-tuning of the paper preset's matrices: (4*64*64 + 2*64*256) per layer x 6 x 2 towers
    ("full", "tiny-clip", (4 * 64 * 64 + 2 * 64 * 256) * 6 * 2),
])
def test_delta_methods_start_at_base_merge_exactly_and_reload(method, backbone, expected, tmp_path, base_clip):
    import copy

    bb = copy.deepcopy(base_clip)
    x = torch.randn(2, 3, 224, 224)
    tok = bb.tokenize(["a photo of a cat.", "a photo of a dog."])
    with torch.no_grad():
        base = bb(x, tok)
    prep = prepare_method(method, bb, HParams())
    assert prep.n_trainable == expected
    assert {n for n, p in bb.named_parameters() if p.requires_grad} == \
        {n for n, p in bb.named_parameters() if any(p is q for q in prep.params.values())}
    with torch.no_grad():
        assert torch.allclose(bb(x, tok), base, atol=1e-5)
        for p in prep.params.values():
            p.add_(0.02 * torch.randn_like(p))
        changed = bb(x, tok)
    assert not torch.allclose(changed, base, atol=1e-4)
    prep.save(tmp_path / "adapter")
    prep.merge()
    with torch.no_grad():
        assert torch.allclose(bb(x, tok), changed, atol=1e-4)
    fresh = copy.deepcopy(base_clip)
    assert load_trained(fresh, tmp_path / "adapter") == method
    with torch.no_grad():
        assert torch.allclose(fresh(x, tok), changed, atol=1e-4)


def test_lora_delta_is_zero_at_init():
    d = LoRADelta(8, 4, None)
    assert torch.count_nonzero(d.delta()) == 0 and d.A.abs().sum() > 0


def test_augmentation_is_a_function_of_the_sample_seed(synthetic_root):
    """Resume and DDP equality on real data need the data layer's random crop/flip to follow our seeds."""
    from medclipsvd.data import ImageDataset, build_transform, load_dataset
    from medclipsvd.engine.trainer import _SeededSamples

    splits = load_dataset("custom", synthetic_root)
    ds = _SeededSamples(ImageDataset(splits.train[:1], build_transform(64, train=True)))
    a, b, c = ds[(0, 123)][0], ds[(0, 123)][0], ds[(0, 124)][0]
    assert torch.equal(a, b) and not torch.equal(a, c)
