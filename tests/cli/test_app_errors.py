"""The command line's last line of defence (medclipsvd.cli.app.run): whatever fails, one line and a
non-zero status; MEDCLIPSVD_DEBUG=1 gives the traceback back."""
from __future__ import annotations

import errno

import pytest

from medclipsvd.cli import app as cli_app


def _boom(exc):
    def raiser() -> None:
        raise exc

    return raiser


def _replace_backbones(monkeypatch, callback) -> None:
    """Swap the `backbones` command's body (typer reads the callback when the app runs)."""
    for cmd in cli_app.app.registered_commands:
        if cmd.name == "backbones":
            monkeypatch.setattr(cmd, "callback", callback)


@pytest.mark.parametrize("exc,code,text", [
    (RuntimeError("kernel said\nno"), 1, "error: unexpected RuntimeError: kernel said no. "),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/adapter.safetensors"), 1,
     "error: No space left on device (/runs/x/adapter.safetensors)"),
    (MemoryError(), 1, "error: out of memory"),
])
def test_every_failure_is_one_line(monkeypatch, capsys, exc, code, text):
    _replace_backbones(monkeypatch, _boom(exc))
    monkeypatch.delenv("MEDCLIPSVD_DEBUG", raising=False)
    assert cli_app.run(["backbones"]) == code
    captured = capsys.readouterr()
    lines = [l for l in captured.err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(text), captured.err
    assert "Traceback" not in captured.out + captured.err
    if code == 1 and isinstance(exc, RuntimeError):
        assert "MEDCLIPSVD_DEBUG=1" in lines[0]


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    _replace_backbones(monkeypatch, _boom(KeyboardInterrupt()))
    assert cli_app.run(["backbones"]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err and captured.err.count("\n") <= 1


def test_debug_shows_the_traceback(monkeypatch):
    _replace_backbones(monkeypatch, _boom(RuntimeError("boom")))
    monkeypatch.setenv("MEDCLIPSVD_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        cli_app.run(["backbones"])


def test_warnings_are_one_line(monkeypatch, capsys):
    import warnings

    def warn() -> None:
        warnings.warn("first part\n   second part", UserWarning)

    _replace_backbones(monkeypatch, warn)
    assert cli_app.run(["backbones"]) == 0
    err = capsys.readouterr().err
    assert err.strip() == "warning: first part second part", err


def test_help_and_exit_codes_pass_through(capsys):
    assert cli_app.run(["--help"]) == 0
    assert "Usage" in capsys.readouterr().out
    assert cli_app.run(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No such command") and "--help" in err and err.count("\n") == 1
