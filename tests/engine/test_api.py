"""The runnable example in docs/python-api.md runs as written (in a temporary folder)."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "test accuracy" in out and "final loss" in out
    assert (tmp_path / "synthetic-adapter" / "adapter.safetensors").exists()
