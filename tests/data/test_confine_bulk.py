"""Root confinement in bulk (RootGuard.violations, used for CSVs and split files): the same decisions as one
path at a time, for every kind of path, with a folder large enough to be listed instead of stat'ed per file;
and '..' after a symlinked folder, which the kernel applies after following the link."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from medclipsvd.data.sources.confine import RootGuard


def _tree(tmp_path: Path) -> tuple[Path, list[str]]:
    """data/ with a big folder (plain files, links inside, links out, a link to a folder out, a dangling link),
    a symlinked folder leading out and one staying in; and the entries to judge, relative or absolute."""
    root, out = tmp_path / "data", tmp_path / "elsewhere"
    big = root / "big"
    (out / "dir").mkdir(parents=True)
    (out / "secret.png").write_bytes(b"s")
    (out / "dir" / "x.png").write_bytes(b"x")
    big.mkdir(parents=True)
    for i in range(150):
        (big / f"f{i}.png").write_bytes(b"f")
    os.symlink(big / "f1.png", big / "link-in.png")
    os.symlink(out / "secret.png", big / "link-out.png")
    os.symlink(out / "dir", big / "dir-out")
    os.symlink(tmp_path / "nowhere.png", big / "dangling.png")
    os.symlink(out / "dir", root / "linked-out")
    os.symlink(big, root / "linked-in")
    entries = [f"big/f{i}.png" for i in range(150)] + [f"big/missing{i}.png" for i in range(80)] + [
        "big/link-in.png", "big/link-out.png", "big/dir-out", "big/dir-out/x.png", "big/dangling.png",
        "big/dir-out/../secret.png", "big/../big/f3.png", "big/./f4.png", "linked-out/x.png", "linked-in/f5.png",
        "linked-in/link-out.png", "nowhere/x.png", "nowhere/../big/f6.png", "../elsewhere/secret.png",
        str(out / "secret.png"), str(big / "f7.png"), str(root), ".", "big", "data.npz::train_images",
        "big/f8.png::x", "linked-out/../secret.png", "linked-in/../big/f9.png"]
    return root, entries


def test_bulk_decisions_equal_one_at_a_time(tmp_path):
    root, entries = _tree(tmp_path)
    for follow in (False, True):
        guard = RootGuard.for_root(root, follow)
        order = list(entries)
        random.Random(3).shuffle(order)  # grouping by folder must not depend on the order
        assert guard.violations(order) == [guard.violation(e) for e in order], follow


def test_what_the_bulk_check_refuses(tmp_path):
    root, _ = _tree(tmp_path)
    expected = {"big/f1.png": None, "big/missing1.png": None, "big/link-in.png": None, "linked-in/f5.png": None,
                "big/link-out.png": "symlink", "big/dir-out/x.png": "symlink", "linked-out/x.png": "symlink",
                "big/dangling.png": "symlink",  # a link leading out is refused before its target exists
                "../elsewhere/secret.png": "outside"}
    assert dict(zip(expected, RootGuard.for_root(root).violations(list(expected)))) == expected


@pytest.mark.parametrize("entry", ["big/dir-out/../secret.png", "linked-out/../secret.png"])
def test_dotdot_after_a_symlinked_folder_is_resolved_as_the_kernel_does(tmp_path, entry):
    """`linked-out/../secret.png` reads elsewhere/secret.png (the kernel follows the link, then goes up);
    collapsing '..' first saw data/secret.png and let it through."""
    root, _ = _tree(tmp_path)
    full = root / entry
    assert full.exists() and os.path.samefile(full, tmp_path / "elsewhere" / "secret.png")  # the premise
    guard = RootGuard.for_root(root)
    assert guard.violation(entry) == "symlink"
    assert guard.violations([entry, "big/../big/f3.png"]) == ["symlink", None]
    assert RootGuard.for_root(root, follow_symlinks=True).violation(entry) is None  # lexically inside


def test_a_folder_that_cannot_be_listed_is_asked_per_name(tmp_path, monkeypatch):
    """Listing a folder is a shortcut; when it fails for another reason than absence, each name is lstat'ed."""
    root, entries = _tree(tmp_path)

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    guard = RootGuard.for_root(root)
    expected = [guard.violation(e) for e in entries]
    monkeypatch.setattr(os, "scandir", refuse)
    assert guard.violations(entries) == expected


def _reference_split(labels, groups, fractions, seed, splits=("train", "val", "test")):
    """The grouped stratified split as first written, with numpy arrays (the optimised loop must match it)."""
    from collections import Counter, defaultdict

    fr = np.asarray(fractions, dtype=float)
    fr = fr / fr.sum()
    by_group = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    strata = defaultdict(list)
    for g, idx in by_group.items():
        counts = Counter(labels[i] for i in idx)
        strata[min(l for l, c in counts.items() if c == max(counts.values()))].append(g)
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    for label in sorted(strata):
        gs = sorted(strata[label])
        order = rng.permutation(len(gs))
        target, got = fr * sum(len(by_group[g]) for g in gs), np.zeros(len(splits))
        for j in order:
            k = int(np.argmax(target - got))
            got[k] += len(by_group[gs[j]])
            for i in by_group[gs[j]]:
                out[i] = splits[k]
    return out


def test_the_split_is_the_same_as_before():
    from medclipsvd.data.sources.splits import grouped_stratified_split

    rnd = random.Random(7)
    for _ in range(60):
        n = rnd.randint(1, 300)
        labels = [rnd.randrange(rnd.randint(1, 4)) for _ in range(n)]
        groups = [f"p{rnd.randrange(rnd.randint(1, n))}" for _ in range(n)]
        fractions = rnd.choice([(0.5, 0.2, 0.3), (1, 0, 0), (1 / 3, 1 / 3, 1 / 3), (0.123, 0.456, 0.421)])
        seed = rnd.randrange(10_000)
        assert grouped_stratified_split(labels, groups, fractions, seed) == \
            _reference_split(labels, groups, fractions, seed)


def test_csv_row_paths_are_pathlib_s():
    """CSV rows are joined as strings; the string must be the one pathlib gives (reports, dedupe, split files)."""
    from medclipsvd.data.sources.custom import _row_path

    for folder in ("/data/x", "/"):
        for rel in ("a.png", "img/a.png", "img//a.png", "./a.png", "a/./b.png", "a/", "a/.", ".", "", "/abs/a.png",
                    "../a.png", "a/../b.png", "...", ".a", "a..png", "//a"):
            assert _row_path(folder, rel) == str(Path(folder) / rel), (folder, rel)


def test_a_nul_byte_is_no_violation_and_no_crash(tmp_path):
    """No file can have a NUL byte in its path (every system call refuses it): the reader reports the entry as
    missing, the guard does not raise on it."""
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    entries = ["a/x\0.png", "a\0b/x.png", "a/../x\0.png", *[f"a/f{i}\0.png" for i in range(70)]]
    guard = RootGuard.for_root(root)
    assert guard.violations(entries) == [None] * len(entries)
    assert guard.violation("a/../x\0.png") is None
