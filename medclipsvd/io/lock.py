"""An advisory lock on an output folder, so two runs never write into the same --output at once.

The lock is a file `<output>/.medclipsvd.lock` created exclusively (O_EXCL) and holding the owner's pid,
host and start time. A lock left by a process that no longer exists on this host is stale and taken over;
a lock from another host is never guessed at (shared file systems): the message says how to remove it."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

from medclipsvd.errors import MedClipSVDError

LOCK_NAME = ".medclipsvd.lock"
# A lock file that cannot be parsed (its writer died between create and write) counts as stale after this.
UNREADABLE_GRACE_S = 30.0


class OutputLockedError(MedClipSVDError):
    """Another run is writing into the same output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _is_stale(path: Path, holder: dict | None) -> bool:
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_GRACE_S
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        return not _alive(int(holder.get("pid")))
    except (TypeError, ValueError):
        return True


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "a run that is starting"
    return (f"process {holder.get('pid')} on {holder.get('host')} ({holder.get('what', 'a run')}, "
            f"since {holder.get('started', '?')})")


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold the lock of `directory` (created if needed) for the duration of the block."""
    from medclipsvd.io.atomic import output_error

    directory = Path(directory)
    path = directory / LOCK_NAME
    token = uuid.uuid4().hex
    info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "token": token,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, directory) from None
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(path)
            if _is_stale(path, holder):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # the owner is gone; whoever recreates it first wins the next attempt
                continue
            raise OutputLockedError(
                f"{directory} is in use by {_describe(holder)}: two runs must not write into one --output. "
                f"Wait for it to finish or choose another --output; if that run is gone, delete {path}.") from None
        except OSError as exc:
            raise output_error(exc, path) from None
        try:
            os.write(fd, json.dumps(info).encode())
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise output_error(exc, path) from None
        os.close(fd)
        break
    else:
        raise OutputLockedError(f"{directory}: could not take the output lock {path}; delete it if no run is "
                                "using the folder")
    try:
        yield path
    finally:
        holder = _read(path)
        if holder is not None and holder.get("token") == token:
            with contextlib.suppress(OSError):
                path.unlink()
