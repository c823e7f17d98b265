"""The one YAML/JSON loader (medclipsvd/io/safeload.py): plain data, UTF-8, no duplicate YAML keys, a cap on
alias expansion, a JSON depth bound, size bounds; each refusal one line naming the file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medclipsvd.errors import FileFormatError, MedClipSVDError
from medclipsvd.io.safeload import MAX_JSON_DEPTH, MAX_YAML_NODES, load_json, load_yaml, read_text

REPO = Path(__file__).resolve().parents[2]


def _file(tmp_path: Path, content: str | bytes, name: str = "f.yaml") -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return p


def _refused(fn, path: Path, *expected: str) -> str:
    with pytest.raises(FileFormatError) as e:
        fn(path)
    msg = str(e.value)
    assert isinstance(e.value, MedClipSVDError) and msg.startswith(f"{path}: ") and "\n" not in msg
    for text in expected:
        assert text in msg, msg
    return msg


def test_plain_yaml_with_anchors_and_merge_keys_still_loads(tmp_path):
    p = _file(tmp_path, "base: &b {lr: 0.002, batch_size: 4}\nrun:\n  <<: *b\n  lr: 0.01\nlist: [*b, *b]\n")
    assert load_yaml(p) == {"base": {"lr": 0.002, "batch_size": 4}, "run": {"lr": 0.01, "batch_size": 4},
                            "list": [{"lr": 0.002, "batch_size": 4}] * 2}


def test_utf8_with_bom_is_accepted(tmp_path):
    assert load_yaml(_file(tmp_path, "\ufeffname: échographie\n".encode("utf-8"))) == {"name": "échographie"}


def test_python_tags_are_refused(tmp_path):
    p = _file(tmp_path, "x: !!python/object/apply:os.system ['true']\n")
    _refused(load_yaml, p, "not valid YAML")


@pytest.mark.parametrize("text,line", [
    ("a: 1\nb: 2\na: 3\n", 3),
    ("outer:\n  x: 1\n  y: 2\n  x: 1\n", 4),
    ("- {k: 1, k: 2}\n", 1),
])
def test_duplicate_keys_are_refused_with_their_line(tmp_path, text, line):
    key = "k" if "k:" in text else ("x" if "x:" in text else "a")
    _refused(load_yaml, _file(tmp_path, text), f"duplicate key {key!r} (line {line})", "remove or rename one")


def test_alias_expansion_is_capped(tmp_path):
    levels = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 6)]  # 10^6 values
    p = _file(tmp_path, "\n".join(levels) + "\n")
    assert p.stat().st_size < 1024
    _refused(load_yaml, p, f"more than {MAX_YAML_NODES} values", "anchors and aliases")
    # four levels (a3 expands to 10^4 values; all four together stay under the cap) are fine
    small = _file(tmp_path, "\n".join(levels[:4]) + "\n", "small.yaml")
    assert len(load_yaml(small)["a3"]) == 10 and load_yaml(small)["a3"][9][9][9] == ["x"] * 10


def test_recursive_alias_is_refused(tmp_path):
    _refused(load_yaml, _file(tmp_path, "a: &a [1, *a]\n"), "anchors and aliases")


def test_deep_yaml_is_one_error(tmp_path):
    _refused(load_yaml, _file(tmp_path, "[" * 20000 + "]" * 20000), "nested too deeply")


def test_non_utf8_names_the_byte(tmp_path):
    p = _file(tmp_path, "description: sein bénin\n".encode("cp1252"))
    _refused(load_yaml, p, f"not UTF-8 text (byte 0xe9 at offset {len('description: sein b')})", "save it as UTF-8")
    _refused(load_json, _file(tmp_path, '{"a": "bénin"}'.encode("cp1252"), "f.json"), "byte 0xe9")


def test_size_bounds(tmp_path):
    p = _file(tmp_path, "a: 1\n" + "#" * 2_000_000 + "\n")
    _refused(load_yaml, p, "MiB, more than the 1 MiB")
    assert load_yaml(p, max_bytes=None) == {"a": 1}
    with pytest.raises(FileFormatError, match="more than the"):
        read_text(p, max_bytes=10)


def test_json_depth_bound(tmp_path):
    ok = _file(tmp_path, "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, "ok.json")
    assert load_json(ok) == json.loads(ok.read_text())
    deep = _file(tmp_path, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "deep.json")
    _refused(load_json, deep, f"more than {MAX_JSON_DEPTH} levels deep")
    nested_objects = _file(tmp_path, '{"a": ' * 200 + "1" + "}" * 200, "objects.json")
    _refused(load_json, nested_objects, "levels deep")
    huge = _file(tmp_path, "[" * 200_000 + "]" * 200_000, "huge.json")  # past Python's recursion limit
    _refused(load_json, huge, "levels deep")


def test_bad_json_is_one_error(tmp_path):
    _refused(load_json, _file(tmp_path, "{not json", "f.json"), "not valid JSON")


def test_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "absent.yaml")


def test_loader_does_not_import_yaml_until_used():
    code = ("import sys\nimport medclipsvd.io.safeload\nassert 'yaml' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_yaml_read_in_the_package_goes_through_the_loader():
    """No other yaml.safe_load / yaml.load in medclipsvd/: one place holds the rules."""
    offenders = []
    for f in (REPO / "medclipsvd").rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        for bad in ("yaml.safe_load(", "yaml.load(", "yaml.full_load(", "yaml.unsafe_load("):
            if bad in text and f.name != "safeload.py":
                offenders.append(f"{f.relative_to(REPO)}: {bad}")
    assert not offenders, offenders
