"""Data-layer test helpers. ``data_synth`` builds tiny roots in the real layouts; the repo's pytest runs in
importlib mode, so this folder is put on the path for it."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# the repo's sibling ../shared/data (real data; tests using it skip when it is absent)
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
