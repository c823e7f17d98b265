"""Every Python example in the core docs runs as written (blocks that need pretrained weights are marked)."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
SKIP_MARK = "# requires pretrained weights"


def _blocks(name):
    text = (DOCS / name).read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if SKIP_MARK not in b]


@pytest.mark.parametrize("name", ["backbones.md", "adapters.md", "monai.md"])
def test_python_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(name)
    assert blocks, f"no runnable example in {name}"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{name}", "exec"), namespace)
