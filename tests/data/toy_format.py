"""A toy image format for tests/data/test_formats.py: the whole of a new reader, as a new format needs it.

A ``.toy`` file is text: ``TOY <height> <width> <grey level 0-255>``; it decodes to a constant grey image."""
import numpy as np

from medclipsvd.errors import DataError


def _fields(path: str) -> tuple[int, int, int]:
    parts = open(path, encoding="ascii").read().split()
    if len(parts) != 4 or parts[0] != "TOY":
        raise DataError(f"{path}: not a toy image (expected 'TOY <height> <width> <grey>')")
    return int(parts[1]), int(parts[2]), int(parts[3])


def check_toy(path: str) -> None:
    _fields(path)


def read_toy(path: str, index=None) -> np.ndarray:
    h, w, grey = _fields(path)
    return np.full((h, w, 3), grey / 255.0, dtype=np.float32)
