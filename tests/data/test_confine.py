"""Root confinement (issue 10, item 2): what RootGuard accepts and refuses, and that --follow-symlinks is the
only way to let a symlink lead outside the data root. The CLI-level rows are in tests/robustness."""
from __future__ import annotations

import os

import pytest
from data_synth import write_image

from medclipsvd.data import load_dataset
from medclipsvd.data.confine import RootGuard
from medclipsvd.errors import DataError


def test_guard_accepts_paths_inside_and_refuses_the_rest(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    g = RootGuard.for_root(root)
    assert g.violation("a/x.png") is None
    assert g.violation(root / "a" / ".." / "a" / "x.png") is None
    assert g.violation(f"{root}/x.npz::train_images") is None
    assert g.violation("../x.png") == "outside"
    assert g.violation("/etc/passwd") == "outside"
    assert g.violation(str(tmp_path / "data2" / "x.png")) == "outside"  # a sibling sharing the prefix


def test_symlinks_out_need_follow_symlinks(tmp_path):
    root = tmp_path / "data"
    outside = write_image(tmp_path / "elsewhere" / "x.png")
    (root / "a").mkdir(parents=True)
    os.symlink(outside, root / "a" / "link.png")
    os.symlink(root / "a", root / "inner")  # a link that stays inside is fine
    assert RootGuard.for_root(root).violation("a/link.png") == "symlink"
    assert RootGuard.for_root(root).violation("inner/link.png") == "symlink"
    assert RootGuard.for_root(root, follow_symlinks=True).violation("a/link.png") is None
    write_image(root / "a" / "real.png")
    assert RootGuard.for_root(root).violation("inner/real.png") is None


def test_a_root_that_is_itself_a_symlink_is_fine(tmp_path):
    real = tmp_path / "real"
    for c in ("a", "b"):
        for i in range(3):
            write_image(real / c / f"{i}.png", seed=10 * ord(c) + i)
    os.symlink(real, tmp_path / "link")
    assert sum(load_dataset("custom", tmp_path / "link").counts().values()) == 6


def test_follow_symlinks_lets_a_folder_dataset_use_linked_files(tmp_path):
    root = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(3):
            write_image(root / c / f"{i}.png", seed=10 * ord(c) + i)
    os.symlink(write_image(tmp_path / "store" / "extra.png", seed=77), root / "a" / "extra.png")
    with pytest.raises(DataError, match=r"'a/extra.png' is a symlink .* --follow-symlinks"):
        load_dataset("custom", root)
    splits = load_dataset("custom", root, follow_symlinks=True)
    assert sum(splits.counts().values()) == 7
