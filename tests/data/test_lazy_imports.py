"""MONAI and SimpleITK are imported only by the code that uses them: not by the CLI start, `data list`, or
loading benchmark-style 2-D data."""
from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import medclipsvd.cli.app, medclipsvd.data, medclipsvd.data.sources.custom, medclipsvd.data.volumes.series
import medclipsvd.data.volumes.read, medclipsvd.data.volumes.slicing, medclipsvd.data.volumes.windows
import medclipsvd.cli.hospital_options
heavy = sorted(m for m in ("monai", "SimpleITK", "scipy.ndimage") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_no_eager_monai_or_simpleitk():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "none"
