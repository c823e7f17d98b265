"""No DICOM patient tag of a *series* reaches any message, log, results file or MLflow record: `data check`,
`train` (file-based MLflow store under the working directory) and a bad-series error, run as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "data"))
from volume_synth import PATIENT, PATIENT_NEEDLES, write_series  # noqa: E402


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"  # rich tables unfolded
    return subprocess.run([sys.executable, "-m", "medclipsvd.cli.app", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _leaks(root: Path) -> list[tuple[str, str]]:
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [(str(p), n) for n in PATIENT_NEEDLES if n.encode() in data]
    return found


def test_series_phi_never_leaves_the_dicom_files(tmp_path):
    data = tmp_path / "data"
    for c, cls in enumerate(("normal", "nodule")):
        for p in range(3):
            write_series(data / cls / f"case{c}{p}" / "ct", n=4, rows=16, cols=16, uid=f"1.9.{c}.{p}", seed=p)
    assert PATIENT["PatientID"].encode() in next(data.rglob("*.dcm")).read_bytes()  # the needles are there
    work = tmp_path / "work"
    work.mkdir()
    check = _cli(["data", "check", "--pipeline", "custom", "--root", str(data), "--slices", "all", "--window", "lung"],
                 work)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert "ct: 4 sample(s)" in check.stdout
    train = _cli(["train", "--pipeline", "ct_study_folder", "--data-root", str(data), "--output", str(work / "run"),
                  "--backbone", "tiny-clip", "--shots", "1", "--max-steps", "1", "--device", "cpu", "--slices", "all",
                  "--window", "lung"], work)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "test (per study)" in train.stdout
    # a broken series: one-line error, exit 2, still no patient data
    write_series(data / "normal" / "case09" / "ct", n=5, rows=16, cols=16, uid="1.9.9", skip=2)
    err = _cli(["data", "check", "--pipeline", "custom", "--root", str(data)], work)
    assert err.returncode == 2 and "missing slice(s)" in err.stderr and "Traceback" not in err.stderr
    logs = check.stdout + check.stderr + train.stdout + train.stderr + err.stdout + err.stderr
    assert not [n for n in PATIENT_NEEDLES if n in logs]
    assert (work / "mlruns").exists() and not _leaks(work)
