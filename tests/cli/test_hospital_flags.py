"""The hospital flags exist on every command with the same names, defaults and help text."""
from __future__ import annotations

import pytest
import typer.main

from medclipsvd.cli.app import app

FLAGS = ("--split-file", "--slices", "--window", "--axis", "--dicom-frames")
COMMANDS = (("train",), ("evaluate",), ("benchmark",), ("predict",), ("interpret",), ("data", "check"),
            ("data", "split"))


def _command(path):
    import click

    cmd = typer.main.get_command(app)
    ctx = click.Context(cmd)
    for name in path:
        cmd = cmd.get_command(ctx, name)
        ctx = click.Context(cmd)
    return cmd


def _options(path) -> dict:
    return {opt: p for p in _command(path).params for opt in getattr(p, "opts", [])}


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_same_hospital_flags_everywhere(path):
    opts = _options(path)
    reference = _options(("train",))
    for flag in FLAGS:
        if flag == "--split-file" and path == ("data", "split"):
            continue  # data split writes a split (--output)
        assert flag in opts, f"{' '.join(path)} lacks {flag}"
        assert opts[flag].default == reference[flag].default, flag
        assert opts[flag].help == reference[flag].help, flag


def test_predict_split_file_classifies_a_split_with_its_true_labels(tmp_path, capsys, monkeypatch):
    """`predict --split-file F --data-root R` classifies one split's entries and shows their true labels; an
    entry leading out of the data root is refused before anything is read."""
    import json
    import sys

    import numpy as np
    from PIL import Image

    from medclipsvd.cli.app import main

    root = tmp_path / "data"
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((np.random.default_rng(i).random((32, 32)) * 255).astype(np.uint8)).save(
                root / cls / f"{i}.png")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": [], "test": [["benign/0.png", 0, "benign"],
                                                                  ["malignant/1.png", 1, "malignant"]]}))
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["medclipsvd", "train", "--pipeline", "custom", "--data-root", str(root),
                                      "--backbone", "tiny-biomedclip", "--random-init", "--shots", "1",
                                      "--max-steps", "1", "--no-mlflow", "--output", str(out)])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code in (0, None), capsys.readouterr().err
    capsys.readouterr()
    preds = tmp_path / "preds.csv"
    monkeypatch.setattr(sys, "argv", ["medclipsvd", "predict", "--adapter", str(out / "adapter"), "--split-file",
                                      str(split), "--data-root", str(root), "--output", str(preds)])
    with pytest.raises(SystemExit) as ex:
        main()
    captured = capsys.readouterr()
    assert ex.value.code in (0, None), captured.err
    import csv

    rows = list(csv.DictReader(preds.open()))
    assert [r["true_label"] for r in rows] == ["benign", "malignant"]
    assert [r["file"] for r in rows] == [str(root / "benign/0.png"), str(root / "malignant/1.png")]
    assert all(r["label"] in ("benign", "malignant") for r in rows)
    assert "correct" in captured.out

    outside = tmp_path / "outside.png"
    outside.write_bytes((root / "benign/0.png").read_bytes())
    split.write_text(json.dumps({"train": [], "val": [], "test": [["../outside.png", 0, "benign"]]}))
    monkeypatch.setattr(sys, "argv", ["medclipsvd", "predict", "--adapter", str(out / "adapter"), "--split-file",
                                      str(split), "--data-root", str(root)])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "../outside.png" in err and "Traceback" not in err, err


def test_bad_window_is_one_line_error_before_work(tmp_path, monkeypatch, capsys):
    import sys

    from medclipsvd.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medclipsvd", "data", "check", "--pipeline", "custom", "--root", str(tmp_path),
                                      "--window", "lungs"])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "unknown window 'lungs'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
