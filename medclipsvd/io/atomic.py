"""Every file a run writes goes through `write_bytes`: the content is serialised in memory first (so the
size is known and no library writes half a file), written to a temp file with a unique name in the same
folder, fsync'd, and renamed over the target. A kill or a full disk leaves the previous file intact and no
temp file behind; a full or read-only disk becomes one OutputError naming the path and the space needed."""
from __future__ import annotations

import errno
import io
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from medclipsvd.errors import MedClipSVDError

# Errors that mean "this disk cannot take the file", as opposed to a bug: reported in one line.
_DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EFBIG: "the file is too large for this file system"}

# Indirection so tests can inject a failing write (ENOSPC) without touching os.write for the whole process.
_os_write = os.write
_os_fsync = os.fsync


class OutputError(MedClipSVDError, OSError):
    """An output file could not be written (disk full, read-only, no permission); nothing was replaced."""

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


def disk_reason(exc: OSError) -> str:
    """What an OS error means for a write, in words ("the disk is full", "the file system is read-only")."""
    return _DISK_ERRORS.get(exc.errno, exc.strerror or str(exc))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def output_error(exc: OSError, path: Path, needed: int | None = None) -> OutputError:
    """One line: what failed, where, how much space it needed and what is free, what to do."""
    why = _DISK_ERRORS.get(exc.errno, exc.strerror or str(exc))
    parts = [f"cannot write {path}: {why}"]
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        try:
            free = shutil.disk_usage(_existing_parent(path)).free
            parts.append(f"it needs {_mb(needed)} and {_mb(free)} are free" if needed is not None
                         else f"{_mb(free)} are free")
        except OSError:
            pass
        fix = "free some space (or choose another --output) and run the same command again"
    elif exc.errno == errno.EROFS:
        fix = "choose a writable --output folder"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        fix = "check the folder's permissions or choose another --output"
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):  # a file stands where a folder is needed
        parts[0] = f"cannot write {path}: a file is in the way of its folder"
        fix = "check the path: --output must name a folder (or a new name), not an existing file"
    else:
        fix = "check the disk and run again"
    err = OutputError(f"{'; '.join(parts)}. Earlier files there are unchanged; {fix}.")
    err.errno = exc.errno
    return err


def _existing_parent(path: Path) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _temp_name(path: Path) -> Path:
    # unique per process and call: two runs (or threads) writing the same file never share a temp file
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on every platform / file system
    try:
        _os_fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace `path` with `data` (folders created). Raises OutputError on disk errors."""
    path = Path(path)
    data = memoryview(data).cast("B")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, path, len(data)) from None
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            done = 0
            while done < len(data):
                done += _os_write(fd, data[done:done + (1 << 24)])
            _os_fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_error(exc, path, len(data)) from None
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """`obj` with NaN/inf floats as None (JSON has no NaN), numpy scalars as Python numbers, paths as str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(obj, "ndim", 0) == 0:
        return json_safe(item())
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return json_safe(tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Strict JSON (no NaN: non-finite numbers become null), written atomically."""
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False)
    return write_text(path, text + "\n")


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def torch_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
