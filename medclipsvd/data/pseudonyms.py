"""Salted pseudonyms for the patient and study identifiers read from DICOM headers.

PatientID and StudyInstanceUID group samples (one patient stays in one split, K counts patients) but are
patient data: they are turned into ``pt-<12 hex>`` / ``st-<12 hex>`` as soon as they are read, and only
the pseudonym is ever kept, shown, logged or written (results.json, split files, MLflow).

The pseudonym is an HMAC-SHA256 keyed by a secret salt, so that the short, guessable identifiers hospitals
use (medical record numbers) cannot be recovered by hashing every candidate. The salt is, in order:
``MEDCLIPSVD_PSEUDONYM_SALT``; a random salt kept in ``~/.config/medclipsvd/pseudonym-salt`` (created with
mode 0600 on first use, so pseudonyms stay the same between runs on one machine); else a random salt for
this process (pseudonyms then only hold within one run - enough for splits and few-shot draws)."""
from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SALT_ENV = "MEDCLIPSVD_PSEUDONYM_SALT"
PREFIXES = ("pt-", "st-")


def _salt_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "medclipsvd" / "pseudonym-salt"


@functools.lru_cache(maxsize=4)
def _salt(env_value: str | None) -> bytes:
    if env_value:
        return env_value.encode("utf-8")
    path = _salt_file()
    try:
        return path.read_bytes().strip() or _new_salt(path)
    except FileNotFoundError:
        return _new_salt(path)
    except OSError:
        return secrets.token_hex(32).encode()


def _new_salt(path: Path) -> bytes:
    salt = secrets.token_hex(32).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # two processes: the first one wins
        with os.fdopen(fd, "wb") as fh:
            fh.write(salt)
    except FileExistsError:
        return path.read_bytes().strip() or salt
    except OSError:  # a read-only home: a per-process salt still groups this run's samples
        pass
    return salt


def pseudonym(value: str, kind: str = "patient") -> str:
    """``pt-…`` (patient) or ``st-…`` (study) for a non-empty identifier; "" for an empty one."""
    value = (value or "").strip()
    if not value:
        return ""
    digest = hmac.new(_salt(os.environ.get(SALT_ENV)), f"{kind}\0{value}".encode("utf-8"), hashlib.sha256)
    return ("pt-" if kind == "patient" else "st-") + digest.hexdigest()[:12]


def is_pseudonym(text: str | None) -> bool:
    return bool(text) and text.startswith(PREFIXES) and len(text) == 15
