"""A run folder is not overwritten silently (issue 16, item 8): `train` into a completed run stops unless
--force; an interrupted run continues with --resume; --force replaces the run."""
from __future__ import annotations

import json

import pytest

from medclipsvd.cli.app import run


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_force_resume_and_refusal_on_one_run_folder(synthetic_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--pipeline", "demo", "--data-root", str(synthetic_root), "--output", str(out),
            "--backbone", "tiny-clip", "--shots", "1", "--max-steps", "2", "--lr", "0.05", "--device", "cpu",
            "--no-mlflow"]
    assert run(argv) == 0
    first = _snapshot(out)

    capsys.readouterr()
    assert run(argv) == 2  # a second training into the same folder
    err = capsys.readouterr().err
    assert "already holds a completed run" in err and "--force" in err and "Traceback" not in err
    assert _snapshot(out) == first

    (out / "results.json").unlink()  # as if the run had stopped after training, before its results
    assert run(argv) == 2
    assert "interrupted run" in capsys.readouterr().err
    assert run([*argv, "--resume"]) == 0  # --resume still continues it
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["train"]["resumed"] is True and resumed["train"]["steps"] == 2

    assert run([*argv, "--force"]) == 0  # and --force replaces it, from scratch
    replaced = json.loads((out / "results.json").read_text())
    assert replaced["train"]["resumed"] is False and replaced["train"]["steps"] == 2
