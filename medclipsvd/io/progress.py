"""Progress bars on a terminal only: a bar redraws itself with carriage returns, which a log file or a CI
console (stderr redirected) keeps as thousands of fragments. Notebooks keep theirs (tqdm.auto draws a widget)."""
from __future__ import annotations

import sys


def interactive() -> bool:
    """True when stderr is a terminal, or in a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable=None, **kwargs):
    """tqdm.auto's bar, switched off when nobody watches it (``disable=True`` still switches it off)."""
    from tqdm.auto import tqdm

    disable = kwargs.pop("disable", False) or not interactive()
    return tqdm(iterable, disable=disable, **kwargs)
