"""Root confinement: every image path that a split file, a CSV or a folder scan names must lie under the
data root the user passed. A split file is data, and data can be wrong or hostile: ``../../etc/passwd``,
an absolute path or a symlink to elsewhere would otherwise be opened, trained on and reported as if it
belonged to the dataset.

One function decides, for every reader (``RootGuard.check``); ``load_dataset`` runs it over each listing
before any entry is opened, and readers that must open files while listing (CSV rows with NIfTI/DICOM
expansion, extension-less DICOM sniffing) call it first; folder scans (class folders, series folders given to
``predict``, ``interpret --images``) walk the whole tree through ``RootGuard.check_tree`` first. Symlinks are refused when they lead outside the
root unless the user passes ``--follow-symlinks`` (``follow_symlinks=True``): then only the lexical path
(after ``..`` is collapsed) must stay inside."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from medclipsvd.data.types import NPZ_KEY_SEP
from medclipsvd.errors import DataError


@functools.lru_cache(maxsize=65536)
def _real_dir(path: str) -> str:
    # one realpath per folder, not per file: ImageNet lists 1.3 M files in 2 000 folders
    return os.path.realpath(path)


def _real(path: str) -> str:
    parent, name = os.path.split(path)
    real_parent = _real_dir(parent)
    full = os.path.join(real_parent, name)
    return os.path.realpath(full) if os.path.islink(full) else full


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class RootGuard:
    """The data root and the symlink policy. ``check`` raises ``DataError`` naming the entry."""

    root: Path
    follow_symlinks: bool = False

    @classmethod
    def for_root(cls, root: str | os.PathLike, follow_symlinks: bool = False) -> "RootGuard":
        r = Path(root).expanduser().absolute()
        return cls(r.parent if r.is_file() else r, follow_symlinks)

    def violation(self, path: str | os.PathLike) -> str | None:
        """``None`` if ``path`` stays under the root, else why not ("outside" or "symlink")."""
        p = os.fspath(path).partition(NPZ_KEY_SEP)[0]
        lexical = os.path.normpath(p if os.path.isabs(p) else os.path.join(self.root, p))
        root = os.path.normpath(str(self.root))
        if not _under(lexical, root):
            return "outside"
        if self.follow_symlinks:
            return None
        return None if _under(_real(lexical), _real_dir(root)) else "symlink"

    def check(self, path: str | os.PathLike, *, entry: str | None = None, source: str | None = None) -> None:
        why = self.violation(path)
        if why is not None:
            raise DataError(self.message(why, repr(entry or os.fspath(path)), source))

    def message(self, why: str, entry: str, source: str | None, more: int = 0) -> str:
        where = f"{source}: " if source else ""
        extra = f" ({more} more entr{'y' if more == 1 else 'ies'} like it)" if more else ""
        if why == "symlink":
            return (f"{where}entry {entry} is a symlink (or lies in a symlinked folder) leading outside the data "
                    f"root {self.root}{extra}; copy the file under the root, or pass --follow-symlinks "
                    f"(follow_symlinks=True) if you trust the link.")
        return (f"{where}entry {entry} points outside the data root {self.root}{extra}; list files by paths "
                f"relative to the data root and keep them under it (the data root of a CSV is its folder).")

    def check_tree(self, folder: str | os.PathLike, *, base: str | os.PathLike | None = None,
                   source: str | None = None) -> list[str]:
        """Check every sub-folder and file under ``folder`` before anything there is opened, walking it as the
        volume scan does (symlinked sub-folders entered, hidden ones skipped); entries are named relative to
        ``base`` (default: the root). Sub-folders are checked before they are entered, so a symlinked folder
        leading out is refused rather than silently skipped. Returns the files (hidden files left out)."""
        from medclipsvd.data.volumes.series import walk

        base = os.fspath(base if base is not None else self.root)
        source = source or base
        files = []
        for dirpath, dirnames, filenames in walk(folder):
            for d in dirnames:
                p = os.path.join(dirpath, d)
                self.check(p, entry=os.path.relpath(p, base), source=source)
            for fn in sorted(filenames):
                if not fn.startswith("."):
                    p = os.path.join(dirpath, fn)
                    self.check(p, entry=os.path.relpath(p, base), source=source)
                    files.append(p)
        return files

    def check_entries(self, entries, source: str | None = None) -> None:
        """Refuse a listing if any entry leaves the root; the message names the first and counts the rest."""
        first, count = None, 0
        for e in entries:
            why = self.violation(e.path)
            if why is not None:
                count += 1
                if first is None:
                    first = (why, f"{e.listed_as or e.path!r} ({e.split})")
        if first is not None:
            raise DataError(self.message(first[0], first[1], source, count - 1))
