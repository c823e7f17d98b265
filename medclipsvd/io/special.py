"""Paths that are not regular files, refused before they are opened: a FIFO blocks its reader until some
other process writes to it (and its writer until one reads), and a device such as /dev/zero never ends. The
one place this is decided; readers of data (images, split files, CSVs), of configuration (YAML, JSON) and the
writers of requested output files all ask here."""
from __future__ import annotations

import os
import stat

from medclipsvd.errors import DataError, MedClipSVDError


def special_kind(mode: int) -> str | None:
    """What a file of ``mode`` is when it is neither a regular file nor a folder, else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def special_problem(path: str | os.PathLike, what: str = "file") -> str | None:
    """The problem with reading or writing ``path`` when it exists and is a special file, else None
    (missing paths and folders are left to the caller's own, more specific, messages)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    kind = special_kind(st.st_mode)
    if kind is None:
        return None
    return (f"is {kind}, not a regular file ({what} expected); reading or writing it could block or never end. "
            f"Point to a regular file (copy the data into one).")


def check_regular_file(path: str | os.PathLike, what: str = "file",
                       error: type[MedClipSVDError] = DataError) -> os.stat_result:
    """``os.stat`` of ``path``, refusing what is not a regular file or folder with one ``error`` naming it.
    A missing path raises OSError (FileNotFoundError) for the caller to word."""
    st = os.stat(path)
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise error(f"{path}: is {kind}, not a regular file ({what} expected); reading or writing it could block "
                    f"or never end. Point to a regular file (copy the data into one).")
    return st
