"""The one way medclipsvd parses YAML and JSON files it is handed (pipelines, hyper-parameter files,
results.json, model_config.json, adapter_config.json, split files, MLflow's MLmodel): as plain data, with
bounds, and with errors that name the file.

- Bytes are decoded as UTF-8 (a byte-order mark is accepted); anything else, e.g. a cp1252 file saved by
  Excel, is one error naming the file, the offending byte and how to re-save it.
- YAML: safe constructors only (no ``!!python`` tags), a single document, no duplicate keys (PyYAML
  silently keeps the last one), and at most ``MAX_YAML_NODES`` nodes once anchors/aliases are expanded:
  a 1 KB file of nested aliases ("billion laughs") otherwise becomes hundreds of millions of values as
  soon as anything walks or serialises it. Anchors within that bound keep working.
- JSON: at most ``MAX_JSON_DEPTH`` levels of nesting (Python's decoder and everything that walks the result
  recurse per level).
- Both: a size bound per call (``max_bytes``), checked before the file is read; FIFOs and devices refused
  before they are opened (``medclipsvd.io.special``).

PyYAML is imported only when a YAML file is read."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medclipsvd.errors import FileFormatError

MAX_YAML_BYTES = 1 << 20          # pipelines and hyper-parameter files are a few KB
MAX_YAML_NODES = 100_000          # values after alias expansion; a pipeline has ~50
MAX_JSON_BYTES = 64 << 20         # results.json of a 1000-class run is a few MB
MAX_JSON_DEPTH = 64               # our files nest 6 levels deep


def _size_check(path: Path, max_bytes: int | None) -> None:
    from medclipsvd.io.special import special_kind

    st = os.stat(path)
    kind = special_kind(st.st_mode)
    if kind is not None:  # before open(): a FIFO blocks the reader, /dev/zero never ends
        raise FileFormatError(path, f"is {kind}, not a regular file; reading it could block or never end. "
                                    "Point to a regular file")
    if max_bytes is None:
        return
    size = st.st_size
    if size > max_bytes:
        raise FileFormatError(path, f"{size / 2**20:.1f} MiB, more than the {max_bytes / 2**20:g} MiB "
                                    "accepted for this kind of file; check that it is the right file")


def decode_utf8(data: bytes, path) -> str:
    """``data`` as UTF-8 text (BOM dropped), or one error naming the file and the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                    "save it as UTF-8 (Excel: 'CSV UTF-8'; editors: encoding UTF-8)") from None


def read_text(path: str | os.PathLike, max_bytes: int | None = None) -> str:
    """The file as UTF-8 text, refused past ``max_bytes``. OSError (missing file, ...) propagates."""
    path = Path(path)
    _size_check(path, max_bytes)
    return decode_utf8(path.read_bytes(), path)


# ------------------------------------------------------------------------------------------------- YAML
_LOADER = None


def _loader_class():
    """A SafeLoader that refuses duplicate keys (built on first use: PyYAML is imported lazily). The pure
    Python loader, not CSafeLoader: its composer recurses in C, and deeply nested input must become a
    RecursionError we can report, not a crash."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class _DuplicateKey(yaml.constructor.ConstructorError):
            pass

        class Loader(yaml.SafeLoader):
            def construct_mapping(self, node, deep=False):
                seen = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides on purpose
                        continue
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        dup = key in seen
                        seen.add(key)
                    except TypeError:  # an unhashable key: the base class reports it
                        continue
                    if dup:
                        raise _DuplicateKey(None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})",
                                            key_node.start_mark)
                return super().construct_mapping(node, deep=deep)

        Loader.DuplicateKey = _DuplicateKey
        _LOADER = Loader
    return _LOADER


def _expanded_size(node, limit: int) -> int:
    """Nodes under ``node`` with every alias expanded (aliases share one node object: counted once per
    use, memoised per object, so the count itself costs the size of the file, not of the expansion)."""
    from yaml.nodes import MappingNode, SequenceNode

    memo: dict[int, int] = {}
    # iterative post-order walk: (node, children done?)
    stack = [(node, False)]
    on_path: set[int] = set()
    while stack:
        n, done = stack.pop()
        key = id(n)
        if key in memo:
            continue
        children = []
        if isinstance(n, SequenceNode):
            children = list(n.value)
        elif isinstance(n, MappingNode):
            children = [c for pair in n.value for c in pair]
        if not done:
            if key in on_path:  # a recursive alias (`&a [*a]`): infinite when expanded
                return limit + 1
            on_path.add(key)
            stack.append((n, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
            continue
        on_path.discard(key)
        total = 1 + sum(memo.get(id(c), 0) for c in children)
        memo[key] = total
        if total > limit:
            return total
    return memo.get(id(node), 0)


def parse_yaml(text: str, path) -> Any:
    """YAML text (from ``path``, named in errors) as plain data; see the module docstring for the rules."""
    import yaml

    try:
        loader = _loader_class()(text)  # its reader refuses control characters (a NUL byte) right here
    except yaml.YAMLError as exc:
        raise FileFormatError(path, f"not valid YAML ({str(exc).strip().splitlines()[0]}); fix the file and "
                                    "retry") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, MAX_YAML_NODES)
        if size > MAX_YAML_NODES:
            raise FileFormatError(path, f"expands to more than {MAX_YAML_NODES} values through its anchors and "
                                        "aliases (&name / *name), which is refused; write the values out")
        return loader.construct_document(node)
    except loader.DuplicateKey as exc:
        raise FileFormatError(path, f"{exc.problem}; each key may appear once in a mapping: remove or "
                                    "rename one") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or (first[0] if first else type(exc).__name__)
        raise FileFormatError(path, f"not valid YAML ({what}{where}); fix the syntax and retry") from None
    except RecursionError:
        raise FileFormatError(path, "nested too deeply to be a configuration file") from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike, max_bytes: int | None = MAX_YAML_BYTES) -> Any:
    """A YAML file as plain data (UTF-8, bounded, no duplicate keys, no alias bombs). OSError propagates."""
    return parse_yaml(read_text(path, max_bytes), Path(path))


# ------------------------------------------------------------------------------------------------- JSON
def _depth_exceeds(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            continue
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


def parse_json(text: str, path, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text (from ``path``, named in errors) as data, at most ``max_depth`` levels deep."""
    try:
        data = json.loads(text)
    except RecursionError:
        data, deep = None, True
    except ValueError as exc:
        raise FileFormatError(path, f"not valid JSON ({str(exc).splitlines()[0]})") from None
    else:
        deep = _depth_exceeds(data, max_depth)
    if deep:
        raise FileFormatError(path, f"nests arrays/objects more than {max_depth} levels deep, which no "
                                    "medclipsvd file does; it is damaged or not the right file")
    return data


def load_json(path: str | os.PathLike, max_bytes: int | None = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON file as data (UTF-8, at most ``max_bytes``, at most ``max_depth`` deep). OSError propagates."""
    return parse_json(read_text(path, max_bytes), Path(path), max_depth)
