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


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _climbs(path: str) -> bool:
    """Whether ``path`` has a '..' component. The kernel applies '..' after following the symlink before it
    (``a/link/../x`` is ``x`` beside the link's target), so such a path is resolved as a whole."""
    return ".." in path and ".." in path.split(os.sep)


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
        return self._violations([path], _real_dir)[0]

    def violations(self, paths) -> list[str | None]:
        """``violation`` of each of ``paths``, decided in bulk: the root and each folder are resolved once
        (afresh, not from the per-process cache of single checks), the lexical test is a string prefix, and a
        folder that many paths share is listed once for its symlinks instead of one lstat per file (a CSV of
        200,000 rows in one folder)."""
        return self._violations(paths, os.path.realpath)

    def _violations(self, paths, resolve) -> list[str | None]:
        raw_root = str(self.root)
        root = os.path.normpath(raw_root)
        prefix = root.rstrip(os.sep) + os.sep
        raw_prefix = raw_root.rstrip(os.sep) + os.sep
        out: list[str | None] = []
        by_parent: dict[str, list[tuple[int, str]]] = {}
        climbing: list[tuple[int, str]] = []
        for i, path in enumerate(paths):
            p = os.fspath(path).partition(NPZ_KEY_SEP)[0]
            full = p if os.path.isabs(p) else os.path.join(raw_root, p)
            lexical = os.path.normpath(full)
            if lexical != root and not lexical.startswith(prefix):
                out.append("outside")
                continue
            out.append(None)
            if self.follow_symlinks:
                continue
            if _climbs(full[len(raw_prefix):] if full.startswith(raw_prefix) else full):
                climbing.append((i, full))
            else:
                parent, name = os.path.split(lexical)
                by_parent.setdefault(parent, []).append((i, name))
        if not (by_parent or climbing):
            return out
        real_root = resolve(root)
        for i, full in climbing:
            try:
                real = os.path.realpath(full)
            except ValueError:  # a NUL byte: nothing can open it, and the reader reports it as missing
                continue
            if not _under(real, real_root):
                out[i] = "symlink"
        for parent, members in by_parent.items():
            try:
                real_parent = resolve(parent)
                links = _symlinks_among(parent, [name for _, name in members])
            except ValueError:  # a NUL byte in the folder's name: as above
                continue
            parent_inside = _under(real_parent, real_root)
            for i, name in members:
                if name in links:
                    inside = _under(os.path.realpath(os.path.join(real_parent, name)), real_root)
                elif parent_inside:  # a plain entry of a folder under the root
                    inside = True
                else:  # the root itself, seen from its parent folder
                    inside = _under(os.path.join(real_parent, name), real_root)
                if not inside:
                    out[i] = "symlink"
        return out

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
        for e, why in zip(entries, self.violations([e.path for e in entries])):
            if why is not None:
                count += 1
                if first is None:
                    first = (why, f"{e.listed_as or e.path!r} ({e.split})")
        if first is not None:
            raise DataError(self.message(first[0], first[1], source, count - 1))


# below this many names in one folder an lstat each is cheaper than listing the folder
_LIST_FOLDER_FROM = 64


def _symlinks_among(folder: str, names: list[str]) -> set[str]:
    """Which of ``names`` (entries of ``folder``) are symlinks: missing ones are not."""
    if len(names) >= _LIST_FOLDER_FROM:
        try:
            with os.scandir(folder) as it:
                return {e.name for e in it if e.is_symlink()}.intersection(names)
        except (FileNotFoundError, NotADirectoryError):  # nothing can be in a folder that is not there
            return set()
        except OSError:  # e.g. a folder that may be entered but not listed (x without r): ask per name
            pass
    return {n for n in names if os.path.islink(os.path.join(folder, n))}
