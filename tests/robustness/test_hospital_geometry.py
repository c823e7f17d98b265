"""Robustness rows for issue 18 items 4 (geometry) and 5 (NIfTI): what a PACS or research archive exports
that is not one regular volume. Inputs that are now read (variable spacing, gantry tilt, a series split
across folders, DCE/DWI phases, 4-D NIfTI, DICOM without a preamble) are checked for their documented
sample count through `data check` (``test_export_gives_the_documented_sample_count``); what stays refused
is one row each: one ``error:`` line naming the file and the fix, exit 2, no traceback, no patient tag."""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

_DATA_TESTS = Path(__file__).resolve().parents[1] / "data"
if str(_DATA_TESTS) not in sys.path:  # the synthetic series writer of the volume tests
    sys.path.insert(0, str(_DATA_TESTS))
from volume_synth import PATIENT, PATIENT_NEEDLES, write_nifti, write_series, write_slice  # noqa: E402

ISSUE = 18
CHECK = ["data", "check", "--dataset", "custom"]


def _check(root: Path, *extra: str) -> list[str]:
    return [*CHECK, "--data-root", str(root), *extra]


def _flat_slices(folder: Path, zs, *, uid: str, prefix: str = "IMG", phi: dict | None = None, value=0.0):
    for j, z in enumerate(zs):
        write_slice(folder / f"{prefix}{j:03d}.dcm", np.full((6, 7), value + z), (0.0, 0.0, z), uid=uid, phi=phi)


def _tree(c: Corpus) -> Path:
    """``data/<class>/patient<p>/ct/``: a valid tree, one 4-slice CT series per patient, two classes."""
    root = c.path("data")
    for k, cls in enumerate(("normal", "nodule")):
        for p in range(2):
            write_series(root / cls / f"patient{p}" / "ct", n=4, uid=f"1.2.826.0.1.{k}.{p}", seed=p)
    return root


def _nifti_raw(tmp: Path, depth: int = 20) -> bytes:
    f = write_nifti(tmp / "src" / "full.nii", (np.arange(8 * 9 * depth, dtype=np.int16) - 500).reshape(8, 9, depth))
    raw = f.read_bytes()
    f.unlink()
    return raw


# ------------------------------------------------------------------------------------------------- NIfTI
def nifti_truncated(c: Corpus) -> Scenario:
    root = _tree(c)
    bad = root / "nodule" / "cut.nii.gz"  # int16, header 20 slices, data for 10 (ITK zero-filled the rest)
    bad.write_bytes(gzip.compress(_nifti_raw(c.root)[:352 + 8 * 9 * 10 * 2]))
    return Scenario(_check(root), [str(bad), "truncated", "header promises 8x9x20", "about 10 of 20 slices",
                                   "re-copy it"], forbidden=[c.outside], keep=[root])


def nifti_malformed(c: Corpus) -> Scenario:
    root = _tree(c)
    raw = _nifti_raw(c.root)
    bad = root / "normal" / "dims.nii"
    bad.write_bytes(raw[:42] + (0).to_bytes(2, "little") + raw[44:])  # dim[1] = 0
    return Scenario(_check(root), [str(bad), "malformed NIfTI header", "dimensions 0x9x20", "re-export"],
                    forbidden=[c.outside], keep=[root])


def nifti_bad_datatype(c: Corpus) -> Scenario:
    root = _tree(c)
    raw = _nifti_raw(c.root)
    bad = root / "normal" / "dtype.nii"
    bad.write_bytes(raw[:70] + (9999).to_bytes(2, "little") + raw[72:])
    return Scenario(_check(root), [str(bad), "malformed NIfTI header", "9999", "re-export"], forbidden=[c.outside],
                    keep=[root])


def nifti_4d_csv_row(c: Corpus) -> Scenario:
    root = c.path("data")
    write_series(root / "good" / "a", n=4, uid="1.2.826.0.1.7.1")
    write_series(root / "good" / "b", n=4, uid="1.2.826.0.1.7.2")
    f = write_nifti(root / "dwi.nii.gz", np.zeros((5, 6, 4, 3), dtype=np.int16))
    csv = c.csv(["good/a,normal,P1", "good/b,nodule,P2", "dwi.nii.gz,nodule,P3"], name="data/rows.csv",
                header="path,label,patient_id")
    return Scenario(_check(csv), [str(f), "is 4-D (3 phases/volumes", "#series=@t0", "@t2"],
                    forbidden=[c.outside], keep=[root])


# ------------------------------------------------------------------------------------------------- DICOM
def dce_without_phase_tag(c: Corpus) -> Scenario:
    root = _tree(c)
    bad = root / "nodule" / "patient9" / "dce"
    for t in range(2):  # every position twice, nothing to tell the two acquisitions apart
        _flat_slices(bad, [2.0 * j for j in range(4)], uid="1.2.826.0.1.9.9", prefix=f"T{t}_")
    return Scenario(_check(root), [str(bad), "duplicated slice position", "TemporalPositionIdentifier",
                                   "DiffusionBValue"], forbidden=[c.outside], keep=[root])


def dce_csv_row(c: Corpus) -> Scenario:
    root = c.path("data")
    write_series(root / "good" / "a", n=4, uid="1.2.826.0.1.7.1")
    write_series(root / "good" / "b", n=4, uid="1.2.826.0.1.7.2")
    for t in (1, 2, 3):
        _flat_slices(root / "dce", [2.0 * j for j in range(4)], uid="1.2.826.0.1.7.3", prefix=f"T{t}_",
                     phi={**PATIENT, "TemporalPositionIdentifier": t})
    csv = c.csv(["good/a,normal,P1", "good/b,nodule,P2", "dce,nodule,P3"], name="data/rows.csv",
                header="path,label,patient_id")
    return Scenario(_check(csv), [str(root / "dce"), "is 4-D (3 phases", "@t0", "@t2", "class folder"],
                    forbidden=[c.outside], keep=[root])


def split_parts_overlap(c: Corpus) -> Scenario:
    root = _tree(c)
    for part in ("a", "b"):  # one series exported twice into two folders: merged, its slices repeat
        _flat_slices(root / "normal" / "patient7" / part, [2.0 * j for j in range(3)], uid="1.2.826.0.1.9.7")
    return Scenario(_check(root), [str(root / "normal" / "patient7"), "split across 2 folders",
                                   "duplicated slice position", "remove the duplicate file"],
                    forbidden=[c.outside], keep=[root])


def modality_unknown(c: Corpus) -> Scenario:
    root = _tree(c)
    return Scenario(_check(root, "--modality", "PET"), ["--modality PET", "modality must be CT or MR"],
                    forbidden=[c.outside], keep=[root])


def _row(row_id: str, item: int, klass: str, bad_input: str, build) -> Row:
    return Row(row_id, item, klass, bad_input, build, issue=ISSUE)


ROWS = [
    _row("nifti-truncated", 5, "NIfTI", "int16 .nii.gz whose header promises 20 slices, data for 10", nifti_truncated),
    _row("nifti-malformed-dims", 5, "NIfTI", "NIfTI header with a dimension of 0", nifti_malformed),
    _row("nifti-unknown-datatype", 5, "NIfTI", "NIfTI header with datatype code 9999", nifti_bad_datatype),
    _row("nifti-4d-csv-row", 4, "4-D data", "CSV row -> a 4-D NIfTI (3 volumes), no volume picked", nifti_4d_csv_row),
    _row("dce-no-phase-tag", 4, "4-D data", "series with every position twice and no phase tag",
         dce_without_phase_tag),
    _row("dce-csv-row", 4, "4-D data", "CSV row -> a DCE series folder (3 phases), no phase picked", dce_csv_row),
    _row("modality-unknown", 5, "option validation", "`--modality PET`", modality_unknown),
    _row("split-series-duplicated", 4, "DICOM series", "one series exported twice into two sub-folders",
         split_parts_overlap),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_row(row: Row, tmp_path):
    outcome = run_row(row, tmp_path)
    assert not [n for n in PATIENT_NEEDLES if n in outcome.text], outcome.text[-3000:]


def _strip_preamble(path: Path) -> None:
    """Rewrite a DICOM file without the 128-byte preamble and 'DICM', under a name without extension."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.preamble = None
    pydicom.dcmwrite(path.with_suffix(""), ds, enforce_file_format=False)
    path.unlink()


def test_export_gives_the_documented_sample_count(tmp_path):
    """One export holding each geometry case that is now read: `data check` lists exactly the documented
    samples (docs/hospital-data.md, "Geometry"), exit 0, no traceback, no patient tag."""
    c = Corpus(tmp_path)
    root = c.path("data")
    # class "abnormal": a series split across two folders (1), a DCE series of 3 phases (3), variable spacing (1)
    _flat_slices(root / "abnormal" / "p1" / "part1", [0.0, 2.0, 4.0], uid="1.2.826.0.1.18.1")
    _flat_slices(root / "abnormal" / "p1" / "part2", [6.0, 8.0, 10.0], uid="1.2.826.0.1.18.1", prefix="B")
    for t in (1, 2, 3):
        _flat_slices(root / "abnormal" / "p2" / "dce", [2.0 * j for j in range(4)], uid="1.2.826.0.1.18.2",
                     prefix=f"T{t}_", phi={**PATIENT, "TemporalPositionIdentifier": t})
    _flat_slices(root / "abnormal" / "p3" / "ct", [0.0, 4.0, 8.0, 15.0, 22.0], uid="1.2.826.0.1.18.3")
    # class "normal": gantry tilt (1), DICOM files without a preamble (1), a 4-D NIfTI of 2 volumes (2)
    write_series(root / "normal" / "p4" / "ct", n=5, tilt_mm=0.8, uid="1.2.826.0.1.18.4")
    write_series(root / "normal" / "p5" / "ct", n=4, uid="1.2.826.0.1.18.5")
    for f in sorted((root / "normal" / "p5" / "ct").iterdir()):
        _strip_preamble(f)
    write_nifti(root / "normal" / "p6.nii.gz", np.zeros((5, 6, 4, 2), dtype=np.int16))
    outcome = run_cli([*_check(root), "--verify", "decode"], cwd=c.root)
    assert outcome.code == 0 and "Traceback" not in outcome.text, outcome.text[-3000:]
    from medclipsvd.data import load_dataset

    splits = load_dataset("custom", root, fractions=(1.0, 0.0, 0.0), verify="decode")
    samples = splits.train + splits.val + splits.test
    per_class = {k: sum(s.classname == k for s in samples) for k in ("abnormal", "normal")}
    assert per_class == {"abnormal": 5, "normal": 4}, sorted(s.path for s in samples)
    assert not [n for n in PATIENT_NEEDLES if n in outcome.text]


def test_modality_option_reaches_the_samples(tmp_path):
    """`--modality CT` on NIfTI volumes without air (guessed MR): the samples' view carries it."""
    c = Corpus(tmp_path)
    root = c.path("data")
    for cls in ("a", "b"):
        for i in range(4):
            write_nifti(root / cls / f"v{i}.nii.gz", np.full((6, 6, 4), 40.0 + i, dtype=np.float32))
    outcome = run_cli([*_check(root), "--modality", "CT", "--window", "brain"], cwd=c.root)
    assert outcome.code == 0 and "view middle|axial|brain|CT" in outcome.text, outcome.text[-3000:]
    plain = run_cli([*_check(root), "--window", "brain"], cwd=c.root)
    assert plain.code == 0 and "view middle|axial|brain\n" in plain.text.replace(")", "\n"), plain.text[-3000:]
