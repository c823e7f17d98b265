"""`medclipsvd data list|check|split` on synthetic roots."""
from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from data_synth import make_root, write_image
from medclipsvd.data import dataset_info


def _cli(*args):
    from medclipsvd.cli.app import app

    return CliRunner().invoke(app, ["data", *args])


def test_list_all_and_by_suite():
    r = _cli("list")
    assert r.exit_code == 0
    for name in ("BUSI", "OCTMNIST", "ImageNetSketch", "FGVCAircraft", "DermaMNIST"):
        assert name in r.output
    bio = _cli("list", "--suite", "biomedical")
    assert "BUSI" in bio.output and "EuroSAT" not in bio.output


def test_check_exit_codes(tmp_path):
    make_root(tmp_path, dataset_info("KneeXray"))
    ok = _cli("check", "-d", "kneexray", "-r", str(tmp_path))
    assert ok.exit_code == 0 and "result: complete" in ok.output
    next((tmp_path / "KneeXray" / "KneeXray" / "healthy_knee").glob("test*")).unlink()
    bad = _cli("check", "-d", "kneexray", "-r", str(tmp_path))
    assert bad.exit_code == 1 and "FAILED" in bad.output and "[test] healthy_knee/test0.png: file not found" in bad.output
    allowed = _cli("check", "-d", "kneexray", "-r", str(tmp_path), "--allow-missing", "--json", str(tmp_path / "r.json"))
    assert allowed.exit_code == 0 and "dropped 1" in allowed.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["totals"]["missing"] == 1 and rep["dropped"]["test"] == 1 and not rep["complete"] and rep["ok"]
    row = next(r for r in rep["rows"] if r["split"] == "test" and r["class"] == "healthy knee")
    assert (row["listed"], row["present"], row["missing"]) == (1, 0, 1)
    assert rep["problems"]["missing"][0]["path"] == "healthy_knee/test0.png"


def test_split_command_writes_a_reusable_file(tmp_path):
    for c in ("benign", "malignant"):
        for p in range(4):
            write_image(tmp_path / "data" / c / f"pt{p}" / "a.png", seed=p)
    out = tmp_path / "split.json"
    r = _cli("split", "--root", str(tmp_path / "data"), "--out", str(out), "--seed", "4")
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and json.loads(out.read_text())["meta"]["seed"] == 4
    again = _cli("split", "--root", str(tmp_path / "data"), "--out", str(out))
    assert again.exit_code != 0 and "exists; pass --force" in str(again.exception)
    check = _cli("check", "-d", "custom", "-r", str(tmp_path / "data"), "--split-file", str(out))
    assert check.exit_code == 0 and "result: complete" in check.output


def test_user_errors_print_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "medclipsvd.cli.app", "data", "check", "-d", "BUSI", "-r",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: BUSI: no data found under" in r.stderr and "Traceback" not in r.stderr + r.stdout
