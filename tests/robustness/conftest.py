"""The robustness suite's harness (harness.py) is imported by the row files; pytest runs in importlib mode,
so this folder goes on the path."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
