"""`medclipsvd interpret` end to end: synthetic images with a tiny adapter, bad input, and a real-data
run on BUSI with an adapter trained here from tiny-biomedclip (skipped when ../shared/data is absent)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medclipsvd.backbones import load_backbone
from medclipsvd.cli.app import app
from medclipsvd.svd import adapt, save_adapter, sigma_parameters

REPO = Path(__file__).resolve().parents[2]
BUSI = REPO / ".." / "shared" / "data" / "biomedical" / "BUSI"


def _run(*args):
    result = CliRunner().invoke(app, ["interpret", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _check_report(out: Path, n_heads: int):
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "## Relative σ change (layers × matrix types)" in md
    assert (out / "figures" / "sigma_change_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["described_heads"]) == n_heads
    return md, summary


def test_cli_synthetic_folder(tmp_path):
    from PIL import Image

    bb = adapt(load_backbone("tiny-clip"), "paper", cache_dir=False)
    with torch.no_grad():
        for i, p in enumerate(sigma_parameters(bb).values()):
            p.mul_(1.0 + 0.01 * (i % 7))
    adapter = save_adapter(bb, tmp_path / "adapter")
    images = tmp_path / "imgs" / "nested"
    images.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        Image.fromarray((torch.rand(30, 30, 3, generator=g) * 255).byte().numpy()).save(images / f"{i}.png")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "report"
    res = _run("--adapter", adapter, "--images", tmp_path / "imgs", "--output", out, "--heads", 2,
               "--texts", 3, "--no-mlflow")
    assert res.exit_code == 0, res.output
    md, summary = _check_report(out, 2)
    assert summary["n_images"] == 6 and summary["pool"] == "general"
    assert "What the most changed vision heads encode (TextSpan)" in md


def test_cli_without_images_writes_weight_report(tmp_path):
    bb = adapt(load_backbone("tiny-biomedclip"), "paper", cache_dir=False)
    with torch.no_grad():
        next(iter(sigma_parameters(bb).values())).mul_(1.2)
    adapter = save_adapter(bb, tmp_path / "adapter")
    res = _run("--adapter", adapter, "--output", tmp_path / "r", "--no-mlflow")
    assert res.exit_code == 0, res.output
    md, _ = _check_report(tmp_path / "r", 0)
    assert "No images given" in md


def test_cli_bad_input_is_a_clear_error_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "medclipsvd.cli.app", "interpret", "--adapter", "/nonexistent/ad"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "/nonexistent/ad is not an adapter folder: adapter_config.json is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--adapter", "/nonexistent/adapter", "--images", "/nonexistent/images"], "not a folder"),
    (["--adapter", "x", "--pipeline", "BUSI"], "needs --data-root"),
    (["--adapter", "x", "--pipeline", "BUSI", "--data-root", "d", "--images", "i"], "not both"),
])
def test_cli_bad_arguments(args, message):
    from medclipsvd.errors import MedClipSVDError

    with pytest.raises(MedClipSVDError, match=message):
        _run(*args)


def _busi_entries(split: str, n_per_class: int):
    entries = json.loads((BUSI / "split_BUSI.json").read_text())[split]
    picked, counts = [], {}
    for rel, label, name in entries:
        if counts.get(label, 0) < n_per_class:
            counts[label] = counts.get(label, 0) + 1
            picked.append((BUSI / "BUSI" / rel, label, name))
    return picked


@pytest.mark.realdata
@pytest.mark.skipif(not BUSI.is_dir(), reason="../shared/data/biomedical/BUSI is absent")
def test_cli_on_busi_with_an_adapter_trained_on_busi(tmp_path):
    """The engine's BUSI adapter may not exist yet, so we train a tiny-biomedclip σ-adapter on 6 BUSI
    training images per class for a few steps (paper preset, AdamW, lr 2e-3) and interpret it."""
    from PIL import Image

    bb = adapt(load_backbone("tiny-biomedclip"), "paper", cache_dir=False)
    train = _busi_entries("train", 6)
    classnames = sorted({(label, name) for _, label, name in train})
    x = torch.stack([bb.preprocess(Image.open(p).convert("RGB")) for p, _, _ in train])
    y = torch.tensor([label for _, label, _ in train])
    tokens = bb.tokenize([f"a photo of a {name}." for _, name in classnames])
    opt = torch.optim.AdamW(sigma_parameters(bb).values(), lr=2e-3, weight_decay=0.0)
    losses = []  # recorded so a failing run shows whether training moved at all
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(bb(x, tokens), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    adapter = save_adapter(bb, tmp_path / "busi_adapter", extra={"trained_on": "BUSI train, 6/class, 3 steps"})

    out = tmp_path / "report"
    res = _run("--adapter", adapter, "--images", BUSI / "BUSI", "--max-images", 16, "--output", out,
               "--heads", 2, "--texts", 4, "--no-mlflow")
    assert res.exit_code == 0, res.output
    md, summary = _check_report(out, 2)
    assert summary["pool"] == "biomedical" and summary["n_images"] == 16
    assert summary["vision_max_rel_sigma_change"] > 0
    # the descriptions come from the biomedical pool
    from medclipsvd.interpret.descriptions import load_descriptions
    pool = set(load_descriptions("biomedical"))
    for head in summary["described_heads"]:
        assert len(head["after"]) == 4 and set(head["after"]) <= pool


@pytest.mark.slow  # creating an MLflow SQLite store costs tens of seconds on a shared CPU
def test_cli_logs_report_to_mlflow(tmp_path, monkeypatch):
    """With tracking on, the report files are MLflow artifacts and the σ-change summary is logged as metrics."""
    import mlflow

    monkeypatch.chdir(tmp_path)  # the local store keeps artifacts under ./mlruns
    bb = adapt(load_backbone("tiny-clip"), "paper", cache_dir=False)
    with torch.no_grad():
        next(iter(sigma_parameters(bb).values())).mul_(1.5)
    adapter = save_adapter(bb, tmp_path / "adapter")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = _run("--adapter", adapter, "--output", tmp_path / "r", "--tracking-uri", uri)
    assert res.exit_code == 0, res.output
    client = mlflow.MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    [run] = [r for r in runs if r.data.tags.get("medclipsvd.command") == "interpret"]
    assert run.data.metrics["vision_max_rel_sigma_change"] == pytest.approx(0.5, rel=1e-4)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "interpret")}
    assert {"interpret/report.md", "interpret/report.html", "interpret/summary.json"} <= names
