"""Text files users export from other tools (issue 16, item 8): UTF-8 with a byte-order mark is read like
UTF-8 (CSV, split JSON, class names); Windows-1252, Latin-1 and UTF-16 are one DataError naming the file,
the line and how to re-save it."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from medclipsvd.errors import DataError
from medclipsvd.io.text import read_user_text

BOM = b"\xef\xbb\xbf"


def _images(root, names):
    for i, name in enumerate(names):
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(root / "img" / name)


def test_bom_is_dropped_and_utf8_kept(tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes(BOM + "path,label\nimg/a.png,lésion\n".encode())
    assert read_user_text(f, "CSV") == "path,label\nimg/a.png,lésion\n"


@pytest.mark.parametrize("encoding,where", [("cp1252", "line 3"), ("latin-1", "line 3"), ("utf-16", "UTF-16")])
def test_other_encodings_are_one_clear_error(tmp_path, encoding, where):
    f = tmp_path / "export.csv"
    f.write_bytes("path,label\nimg/a.png,benign\nimg/b.png,lésion\n".encode(encoding))
    with pytest.raises(DataError) as info:
        read_user_text(f, "CSV")
    msg = str(info.value)
    assert str(f) in msg and where in msg and "save it as UTF-8" in msg and "\n" not in msg, msg


def test_csv_with_bom_header_loads(tmp_path):
    """Excel's 'CSV UTF-8' starts with a BOM: the first column must still be `path`."""
    from medclipsvd.data.sources.custom import read_csv

    _images(tmp_path, ["a.png", "b.png"])
    csv = tmp_path / "data.csv"
    csv.write_bytes(BOM + "path,label\nimg/a.png,lésion\nimg/b.png,normal\n".encode())
    items, classnames = read_csv(csv)
    assert sorted(str(i[2]) for i in items) == ["lésion", "normal"] and classnames is None


def test_classnames_txt_with_bom(tmp_path):
    from medclipsvd.data.sources.custom import read_csv

    _images(tmp_path, ["a.png", "b.png"])
    csv = tmp_path / "data.csv"
    csv.write_text("path,label\nimg/a.png,0\nimg/b.png,1\n")
    (tmp_path / "classnames.txt").write_bytes(BOM + "bénin\nmalin\n".encode())
    _, classnames = read_csv(csv)
    assert classnames == ["bénin", "malin"]


def test_split_json_with_bom(tmp_path):
    from medclipsvd.data.sources.layouts import read_split_json

    f = tmp_path / "split.json"
    f.write_bytes(BOM + json.dumps({"train": [["a.png", 0, "bénin"]], "val": [], "test": []}).encode())
    assert read_split_json(f)["train"] == [["a.png", 0, "bénin"]]


def test_split_json_in_latin1_names_the_file(tmp_path):
    from medclipsvd.data.sources.layouts import read_split_json

    f = tmp_path / "split.json"
    f.write_bytes('{"train": [["a.png", 0, "bénin"]]}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"split\.json: not UTF-8 text .*save it as UTF-8"):
        read_split_json(f)
