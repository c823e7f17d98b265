"""THE adapter folder format, for every trained method: `adapter_config.json`, whose "method" key names
the method whose loader reads the rest ("svd": σ tensors, `medclipsvd.svd.adapter_io`; "lora" / "full":
row deltas, `methods/deltas.py`), beside that method's safetensors file.

Folders written before the key existed still load: an adapter_config.json without "method" is a σ adapter
(the only kind that file held), and a `method.json` (the LoRA / full record up to 0.2) is that method's
record under its old name. Which file is read never relaxes a check: each method's loader checks the
digest, dtypes, shapes and value ranges of its tensors as before."""
from __future__ import annotations

from pathlib import Path

from medclipsvd.errors import AdapterError

CONFIG_FILE = "adapter_config.json"   # the same name as medclipsvd.svd.adapter_io.CONFIG_NAME
LEGACY_METHOD_FILE = "method.json"    # LoRA / full folders written before the one format


def record_path(adapter_dir: str | Path) -> Path:
    """The file holding the folder's method record: a method.json where there is one (as before the one
    format: a method.json dropped beside a σ adapter_config.json is still the record read, and checked),
    else adapter_config.json. medclipsvd never writes both."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / LEGACY_METHOD_FILE).exists():
        return adapter_dir / LEGACY_METHOD_FILE
    return adapter_dir / CONFIG_FILE


def read_method(adapter_dir: str | Path) -> tuple[object, dict | None]:
    """(method key, record) of an adapter folder. For σ the record is None: its own reader
    (`read_adapter_config`) reads and checks the file, and names what is wrong with a damaged one. The
    method key is returned as found (possibly not a string); the registry refuses unknown ones."""
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_json

    path = record_path(adapter_dir)
    if path.name == CONFIG_FILE:
        try:
            config = load_json(path)  # UTF-8, bounded size and depth
        except (OSError, FileFormatError):
            return "svd", None  # missing or damaged: the σ reader gives its one-line error
        method = config.get("method", "svd") if isinstance(config, dict) else "svd"
        return (method, None) if method == "svd" else (method, config)
    try:
        meta = load_json(path)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} cannot be read ({getattr(exc, 'problem', exc)}); the adapter folder is "
                           "damaged") from None
    if not isinstance(meta, dict):
        raise AdapterError(f"{path}: fields 'method', 'fingerprint' (and 'layers') are missing or of the wrong "
                           "type; the file is damaged or was edited")
    return meta.get("method"), meta
