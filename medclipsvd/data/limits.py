"""Resource limits on what a data file may ask of the machine, each configurable by an environment variable.

A few bytes of input can claim gigabytes (a 138-byte PNG of 1x60000 pixels takes ~36 GB to resize to the
model's input; a compressed DICOM or .npz can claim a volume far larger than memory), and a path can name a
FIFO or a device that blocks or never ends. Every limit is checked *before* the expensive step (decoding,
parsing, forking), and its error names the file, the size found, the limit and the variable that raises it.
The image and volume limits live in ``medclipsvd.data.readers.common`` beside the pixel limit they extend; the
DataLoader worker limit in ``medclipsvd.data.workers``; this module holds the shared pieces and the limits
on list files (split files, CSVs)."""
from __future__ import annotations

import math
import os
import stat

from medclipsvd.errors import DataError
from medclipsvd.io.special import check_regular_file  # noqa: F401 - the one place for FIFOs and devices

SPLIT_BYTES_ENV = "MEDCLIPSVD_MAX_SPLIT_BYTES"
SPLIT_ENTRIES_ENV = "MEDCLIPSVD_MAX_SPLIT_ENTRIES"
CSV_BYTES_ENV = "MEDCLIPSVD_MAX_CSV_BYTES"
CSV_ROWS_ENV = "MEDCLIPSVD_MAX_CSV_ROWS"
# ImageNet's 1.28 M training images make a ~100 MB split file; parsing 256 MB of JSON already takes a few GB
DEFAULT_LIST_BYTES = 256 * 1024 * 1024
DEFAULT_LIST_ENTRIES = 5_000_000


def env_limit(name: str, default: float, unit: str, integer: bool = True, minimum: float = 1) -> float:
    """The number (at least ``minimum``) in the environment variable ``name``; ``default`` when unset or blank."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and integer:
        value = int(value)
    if not (math.isfinite(value) and value >= minimum):
        example = int(default) if integer else default
        raise DataError(f"{name}={raw!r} is not a {unit} of at least {minimum:g}; set it to e.g. {example} "
                        f"or unset it.")
    return value


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_list_file(path: str | os.PathLike, what: str, env: str, default: int = DEFAULT_LIST_BYTES) -> int:
    """Before reading a split file or CSV: a regular file no larger than the limit. Returns its size."""
    st = check_regular_file(path, what)
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a folder, not a {what}; point to the file itself.")
    limit = int(env_limit(env, default, "size in bytes"))
    if st.st_size > limit:
        raise DataError(f"{path}: {what} is {_size(st.st_size)}, above the limit of {_size(limit)} (a guard "
                        f"against files that exhaust memory when parsed); split it, or raise the limit with "
                        f"{env}={st.st_size} if the file is genuine.")
    return st.st_size


def read_list_text(path: str | os.PathLike, what: str, env: str = SPLIT_BYTES_ENV) -> str:
    """A small list file (class names, split lists) as text, after ``check_list_file``."""
    from medclipsvd.io.text import read_user_text

    check_list_file(path, what, env)
    return read_user_text(path, what)  # UTF-8 (BOM dropped); another encoding is one line with the fix


def entry_limit(env: str, default: int = DEFAULT_LIST_ENTRIES) -> int:
    return int(env_limit(env, default, "number of entries"))


def too_many(path: str | os.PathLike, what: str, count: str, limit: int, env: str, unit: str = "entries"
             ) -> DataError:
    """The error for a list file with more than ``limit`` entries (``count``: "5,000,001" or "more than ...")."""
    return DataError(f"{path}: {what} has {count} {unit}, above the limit of {limit:,} (a guard against files "
                     f"that exhaust memory); split the dataset, or raise the limit with {env}=N if the file is "
                     f"genuine.")
