"""Where pretrained files come from: `hf-hub:org/repo`, `local-dir:/path`, or a file path.

Only safetensors files or plain tensor state dicts (`torch.load(weights_only=True)`) are read; nothing is
unpickled. When a file cannot be found offline the error names the folder, the files expected and how to
provide them (never the other files of that folder).
"""
from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import torch

from medclipsvd.errors import WeightsNotAvailableError

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """One quick TCP probe of the hub per process, so that offline machines fail at once instead of
    waiting through huggingface_hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _hf_download(repo_id: str, filename: str, allow_network: bool = True) -> Path | None:
    """Return a local path for `filename` of `repo_id`, from the HF cache or the network; None if absent."""
    from huggingface_hub import hf_hub_download

    online = allow_network and hub_reachable()
    for local_only in ((True, False) if online else (True,)):
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=local_only))
        except Exception:  # noqa: BLE001 - any hub failure (offline, 404, DNS) means "not available here"
            continue
    return None


def resolve_files(source: str, candidates: list[str], *, what: str, hint: str, allow_network: bool = True) -> Path:
    """Find the first of `candidates` available from `source` and return its local path.

    `what` names the thing being loaded for the message; `hint` says how to provide it offline;
    `allow_network=False` looks only in the local Hugging Face cache."""
    if source.startswith(HF_PREFIX):
        repo = source[len(HF_PREFIX):].strip("/")
        for name in candidates:
            path = _hf_download(repo, name, allow_network)
            if path is not None:
                return path
        raise WeightsNotAvailableError(
            f"cannot load {what} from {source}: none of {', '.join(candidates)} is in the local Hugging Face "
            f"cache and the hub cannot be reached (offline?). {hint}"
        )
    directory = Path(source[len(LOCAL_PREFIX):] if source.startswith(LOCAL_PREFIX) else source).expanduser()
    if directory.is_file():
        return directory
    if not directory.is_dir():
        raise WeightsNotAvailableError(f"cannot load {what}: {directory} does not exist. {hint}")
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    # the folder is named, its contents are not: it may be any folder (a home directory, a share), and its
    # file names are none of this message's business
    wanted = f"no {candidates[0]}" if len(candidates) == 1 else f"none of {', '.join(candidates)}"
    raise WeightsNotAvailableError(
        f"cannot load {what}: the folder {directory} has {wanted}. Point at the folder that holds "
        f"{'it' if len(candidates) == 1 else 'one of them'}. {hint}"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely: safetensors, or a tensor-only torch checkpoint."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - SafetensorError and the OSErrors of a damaged file
            raise WeightsNotAvailableError(
                f"{path} is not a readable safetensors file ({type(exc).__name__}: {str(exc)[:200]}); it is "
                "damaged or is another kind of file: restore or re-download it.") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsNotAvailableError(
            f"{path} is not a plain tensor checkpoint ({type(exc).__name__}: {str(exc)[:200]}). "
            "Convert it to safetensors (or a state_dict saved with torch.save) first; medclipsvd never "
            "unpickles arbitrary objects."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsNotAvailableError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}
