"""Is a file a weights file medclipsvd can read? Decided from its first bytes, without torch, so that
`--weights` is checked when the command line is read, before data is scanned or a model is built, and the
error names the option (the readers in sources.py fail later, naming only the file).

The formats: safetensors (an 8-byte little-endian header length, then a JSON header), a torch.save zip
archive (also TorchScript), a legacy torch.save pickle stream, and a transformers shard index
(`*.index.json`). The content of a file that is none of these is never shown: it may be anything
(`/etc/passwd`, a patient list)."""
from __future__ import annotations

import os
import stat

from medclipsvd.io.special import special_kind

SOURCE_PREFIXES = ("hf-hub:", "local-dir:")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json")
FIX = "pass a .safetensors file, a state_dict saved with torch.save, hf-hub:ORG/REPO or local-dir:DIR"


def looks_like_weights(head: bytes, name: str) -> bool:
    """Whether ``head`` (at least the first 16 bytes of a file, when it has them) starts a weights file."""
    if head.startswith(b"PK\x03\x04"):          # torch.save's zip archive
        return True
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # a pickle stream (protocol 2+)
        return True                             # read later with weights_only=True: tensors only, never objects
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:  # safetensors
        return True
    return name.endswith(".index.json") and head.lstrip()[:1] == b"{"


def weights_file_problem(path: str) -> str | None:
    """What is wrong with reading ``path`` as a weights file, or None when it exists and looks like one (or is
    a folder: the loaders look inside it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISDIR(st.st_mode):
        return None
    kind = special_kind(st.st_mode)
    if kind is not None:
        return f"is {kind}, not a weights file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if looks_like_weights(head, os.path.basename(path)):
        return None
    return "is not a weights file (neither safetensors nor a torch tensor checkpoint)"


def weights_option_problem(value: str) -> str | None:
    """The problem with a ``--weights`` value, or None. A value without a scheme that is no path on disk may be
    an open_clip pretrained tag (``openai``): left to the backbone, which knows its tags; a value that is
    spelled like a path (a folder separator, a weights suffix) must exist."""
    if value.startswith("hf-hub:"):
        return None
    if value.startswith("local-dir:"):
        folder = os.path.expanduser(value[len("local-dir:"):])
        if not folder:
            return "names no folder"
        if not os.path.isdir(folder):
            return f"the folder {folder} does not exist (or is not a folder)"
        return None
    path = os.path.expanduser(value)
    if not os.path.lexists(path) and os.sep not in value and "/" not in value and not value.endswith(WEIGHT_SUFFIXES):
        return None  # an open_clip tag
    return weights_file_problem(path)
