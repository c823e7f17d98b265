"""Root confinement (issue 10, item 2): what RootGuard accepts and refuses, and that --follow-symlinks is the
only way to let a symlink lead outside the data root. The CLI-level rows are in tests/robustness."""
from __future__ import annotations

import os

import pytest
from data_synth import write_image

from medclipsvd.data import load_dataset
from medclipsvd.data.sources.confine import RootGuard
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


def test_root_of_a_csv_file_is_its_folder_and_the_filesystem_root_holds_everything(tmp_path):
    csv = tmp_path / "data" / "list.csv"
    csv.parent.mkdir()
    csv.write_text("path,label\n")
    assert RootGuard.for_root(csv).root == csv.parent
    assert RootGuard.for_root(tmp_path / "data").root == csv.parent
    assert RootGuard.for_root("/").violation("/etc/passwd") is None  # "/" is a root like any other


def test_check_messages_name_the_entry_the_source_and_the_way_out(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    os.symlink(write_image(tmp_path / "elsewhere" / "x.png"), root / "a" / "link.png")
    g = RootGuard.for_root(root)
    g.check("a/fine.png")  # inside: nothing raised
    with pytest.raises(DataError) as err:
        g.check("../x.png")
    assert str(err.value) == (f"entry '../x.png' points outside the data root {root}; list files by paths relative "
                              "to the data root and keep them under it (the data root of a CSV is its folder).")
    with pytest.raises(DataError) as err:
        g.check(root / "a" / "link.png", entry="a/link.png", source="split.json")
    assert str(err.value) == (f"split.json: entry 'a/link.png' is a symlink (or lies in a symlinked folder) leading "
                              f"outside the data root {root}; copy the file under the root, or pass "
                              "--follow-symlinks (follow_symlinks=True) if you trust the link.")


def test_check_entries_names_the_first_offender_and_counts_the_rest(tmp_path):
    from types import SimpleNamespace as E

    root = tmp_path / "data"
    root.mkdir()
    g = RootGuard.for_root(root)
    g.check_entries([E(path="a.png", listed_as=None, split="train")], "s.json")  # all inside: nothing raised
    one_more = [E(path="a.png", listed_as=None, split="train"), E(path="/etc/passwd", listed_as="/etc/passwd",
                                                                    split="test"),
                E(path=str(tmp_path / "x.png"), listed_as=None, split="val")]
    with pytest.raises(DataError) as err:
        g.check_entries(one_more, "s.json")
    assert str(err.value).startswith(f"s.json: entry '/etc/passwd' (test) points outside the data root {root} "
                                     "(1 more entry like it); ")
    with pytest.raises(DataError) as err:
        g.check_entries(one_more + [E(path="../y.png", listed_as="../y.png", split="train")], None)
    assert str(err.value).startswith(f"entry '/etc/passwd' (test) points outside the data root {root} "
                                     "(2 more entries like it); ")


def test_check_entries_reports_a_symlink_by_how_it_was_listed(tmp_path):
    from types import SimpleNamespace as E

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    os.symlink(write_image(tmp_path / "elsewhere" / "x.png"), root / "a" / "link.png")
    g = RootGuard.for_root(root)
    entries = [E(path=str(root / "a" / "link.png"), listed_as="a/link.png", split="val"),
               E(path=str(tmp_path / "y.png"), listed_as=None, split="train")]
    with pytest.raises(DataError) as err:
        g.check_entries(entries, "list.csv")
    assert str(err.value).startswith(f"list.csv: entry 'a/link.png' (val) is a symlink (or lies in a symlinked "
                                     f"folder) leading outside the data root {root} (1 more entry like it); ")
    with pytest.raises(DataError) as err:
        g.check_entries(entries[1:], None)
    assert str(err.value).startswith(f"entry {str(tmp_path / 'y.png')!r} (train) points outside")
