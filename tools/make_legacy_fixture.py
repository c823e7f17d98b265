"""Writes tests/fixtures/legacy_v0_1/: run folders (σ adapter, LoRA adapter) and a sealed model folder as
medclipsvd 0.1.0 wrote them before the architecture step (issue 17), plus the probabilities and logits
they gave then. tests/test_legacy_fixture.py loads them with the current code and compares.

Run once, from the repository root, on the commit named in the fixture's README:
    PYTHONPATH=. python tools/make_legacy_fixture.py
Re-running it overwrites the fixture: only do that when the stored format changes on purpose."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "legacy_v0_1"


def _images(root: Path) -> None:
    for c, name in enumerate(("benign", "malignant")):
        for i in range(4):
            rng = np.random.default_rng(100 * c + i)
            arr = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
            arr[..., c] = 255 - 30 * c  # a class-dependent channel so the classes differ
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / name / f"{name}{i}.png")


def _train(data: Path, out: Path, method: str, backbone: str) -> None:
    subprocess.run([sys.executable, "-m", "medclipsvd", "train", "--pipeline", "custom", "--data-root", str(data),
                    "--output", str(out), "--backbone", backbone, "--method", method, "--shots", "2",
                    "--max-steps", "3", "--no-mlflow", "--device", "cpu", "--seed", "3"],
                   check=True, cwd=REPO)


def main() -> None:
    import torch

    from medclipsvd.backbones import load_backbone
    from medclipsvd.methods.registry import load_trained
    from medclipsvd.svd import merge
    from medclipsvd.serving.predictor import Predictor
    from medclipsvd.serving.trained_run import local_model_config
    from medclipsvd.tracking.registry import save_pyfunc
    from medclipsvd.tracking.model_files import seal_model_dir

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    work = OUT / "_work"
    _images(OUT / "images")
    runs = {"svd_run": ("svd", "tiny-biomedclip"), "lora_run": ("lora", "tiny-clip")}
    for name, (method, backbone) in runs.items():
        _train(OUT / "images", work / name, method, backbone)
        dest = OUT / name
        dest.mkdir()
        shutil.copytree(work / name / "adapter", dest / "adapter")
        shutil.copy(work / name / "results.json", dest / "results.json")
    probes = sorted(str(p.relative_to(OUT)) for p in (OUT / "images").rglob("*.png"))[::3]
    expected: dict = {"images": probes, "runs": {}}
    x = torch.linspace(-1, 1, 3 * 224 * 224).reshape(1, 3, 224, 224)
    for name, (method, backbone) in runs.items():
        adapter = OUT / name / "adapter"
        pred = Predictor.from_adapter(str(adapter))
        probs = pred.predict_proba([str(OUT / p) for p in probes])
        bb = load_backbone(backbone)
        assert load_trained(bb, adapter) == method
        if method == "svd":
            merge(bb)
        bb.eval()
        classnames = json.loads((OUT / name / "results.json").read_text())["classnames"]
        template = json.loads((OUT / name / "results.json").read_text())["run"]["template"]
        with torch.no_grad():
            logits = bb(x[:, :, : bb.image_size, : bb.image_size],
                        bb.tokenize([template.format(c) for c in classnames]))
        expected["runs"][name] = {"method": method, "backbone": backbone,
                                  "probabilities": np.asarray(probs).tolist(), "logits": logits.tolist()}
    # a model folder as `medclipsvd register` writes it (MLflow pyfunc, sealed), without a tracking server
    config = local_model_config(str(OUT / "svd_run" / "adapter"))
    (work / "model").mkdir(parents=True)
    model_dir = save_pyfunc(config, OUT / "svd_run" / "adapter", work / "model")
    seal_model_dir(model_dir)
    shutil.copytree(model_dir, OUT / "model")
    from medclipsvd.tracking.model_files import load_predictor

    mprobs = load_predictor(str(OUT / "model")).predict_proba([str(OUT / p) for p in probes])
    expected["model"] = {"probabilities": np.asarray(mprobs).tolist()}
    shutil.rmtree(work)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
