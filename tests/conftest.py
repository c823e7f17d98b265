"""Shared fixtures. Real data lives beside the repository in ../shared/data; tests using it skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# header PatientIDs become salted pseudonyms (medclipsvd/data/pseudonyms.py); a fixed salt keeps the suite from
# creating the per-user salt file in ~/.config (tests/data/test_series_selection.py tests that file itself)
os.environ.setdefault("MEDCLIPSVD_PSEUDONYM_SALT", "medclipsvd-test-suite")

# Under pytest-xdist every worker is one process per core: one intra-op thread each, so that two workers on two
# cores do not run four threads (set before torch is imported; the CLI subprocesses inherit it).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA
