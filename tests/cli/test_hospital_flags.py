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
        if flag == "--split-file" and path in (("predict",), ("data", "split")):
            continue  # data split writes a split (--out); predict: see below
        assert flag in opts, f"{' '.join(path)} lacks {flag}"
        assert opts[flag].default == reference[flag].default, flag
        assert opts[flag].help == reference[flag].help, flag


@pytest.mark.xfail(reason="predict --split-file not added yet (see the hospital report)", strict=False)
def test_predict_split_file():
    assert "--split-file" in _options(("predict",))


def test_bad_window_is_one_line_error_before_work(tmp_path, monkeypatch, capsys):
    import sys

    from medclipsvd.cli.app import main

    monkeypatch.setattr(sys, "argv", ["medclipsvd", "data", "check", "--dataset", "custom", "--root", str(tmp_path),
                                      "--window", "lungs"])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "unknown window 'lungs'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
