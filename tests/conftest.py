"""Shared fixtures. Real data lives beside the repository in ../shared/data; tests using it skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# header PatientIDs become salted pseudonyms (medclipsvd/data/pseudonyms.py); a fixed salt keeps the suite from
# creating the per-user salt file in ~/.config (tests/data/test_series_selection.py tests that file itself)
os.environ.setdefault("MEDCLIPSVD_PSEUDONYM_SALT", "medclipsvd-test-suite")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA
