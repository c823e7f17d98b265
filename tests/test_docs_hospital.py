"""The Python examples of docs/hospital-data.md run as written on the real volumes (skipped without them)."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VOLUMES = REPO / ".." / "shared" / "data" / "volumes"


@pytest.mark.skipif(not VOLUMES.is_dir(), reason=f"real volumes not available at {VOLUMES}")
def test_hospital_doc_examples_run(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "hospital-data.md").read_text(), flags=re.S)
    assert blocks
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "hospital-data.md", "exec"), ns)
    out = capsys.readouterr().out
    assert "(3, 512, 512) float32 0.217" in out and "(4, 3, 88, 512)" in out and "all|axial|multi" in out
    # masks as regions: the demo's sphere (planes 19..28 of the chest copy) - its plane and 5 mm box
    assert "'box': [[16, 32], [233, 280], [147, 194]], 'plane': 23, 'mask_voxels': 5250" in out and "(3, 47, 47)" in out
