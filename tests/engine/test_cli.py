"""CLI: pipelines listing, help text, and user errors printed without a traceback (exit status 2)."""
import json
import sys

import pytest
from typer.testing import CliRunner

from medclipsvd.cli.app import app, main


def test_pipelines_json_lists_all():
    r = CliRunner().invoke(app, ["pipelines", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    names = {row["name"] for row in rows}
    assert {"breast_ultrasound", "chest_xray", "custom", "demo", "eurosat"} <= names


@pytest.mark.parametrize("cmd", ["train", "evaluate", "benchmark", "demo", "pipelines"])
def test_help_explains(cmd):
    r = CliRunner().invoke(app, [cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


@pytest.mark.parametrize("argv,message", [
    (["train", "--pipeline", "no_such", "--data-root", ".", "--output", "x", "--no-mlflow"], "unknown pipeline 'no_such'"),
    (["evaluate", "--adapter", "/nonexistent/adapter", "--no-mlflow"], "does not exist"),
    (["benchmark", "--suite", "BUSI", "--method", "coop", "--data-root", ".", "--output", "x", "--no-mlflow"],
     "unknown method"),
    (["benchmark", "--suite", "BUSI", "--shard", "3", "--data-root", ".", "--output", "x", "--no-mlflow"],
     "--shard '3'"),
])
def test_user_errors_are_messages(argv, message, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["medclipsvd", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert message in err and "Traceback" not in err
