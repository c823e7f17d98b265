"""Robustness rows for hospital volumes (issue 9, "Bad input"): DICOM series that are not one regular stack,
sample folders holding several series or none, NIfTI with NaN/inf, 2-D files where volumes are expected and
the reverse, bad HU windows and MONAI ``preprocess:`` steps, and series folders symlinked out of the data root.

Every series is written with fake patient tags (``volume_synth.PATIENT``); on top of the harness's five rules,
each row checks that none of those values appears in the output or in any file the command wrote."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

_DATA_TESTS = Path(__file__).resolve().parents[1] / "data"
if str(_DATA_TESTS) not in sys.path:  # the synthetic series writer of the volume tests
    sys.path.insert(0, str(_DATA_TESTS))
from volume_synth import PATIENT_NEEDLES, slice_hu, write_nifti, write_series, write_slice  # noqa: E402

ISSUE, ITEM = 9, "bad input"  # the hospital-data issue and its "Bad input" section
CHECK = ["data", "check", "--pipeline", "custom"]


def _check(root: Path, *extra: str) -> list[str]:
    return [*CHECK, "--data-root", str(root), *extra]


def _train(c: Corpus, root: Path, *extra: str) -> list[str]:
    """For classes found only when voxels are decoded: `data check` lists those in its per-class report
    (by design, exit 1); `train` must stop with one line before any training step."""
    return ["train", "--pipeline", "custom", "--data-root", str(root), "--output", str(c.path("out")), *c.FAST,
            *extra]


def _tree(c: Corpus, patients: int = 2) -> Path:
    """``data/<class>/patient<p>/ct/``: a valid study tree, one 4-slice CT series per patient."""
    root = c.path("data")
    for k, cls in enumerate(("normal", "nodule")):
        for p in range(patients):
            write_series(root / cls / f"patient{p}" / "ct", n=4, uid=f"1.2.826.0.1.{k}.{p}", seed=p)
    return root


def _csv(c: Corpus, rows: list[str]) -> Path:
    """``data/rows.csv`` over ``data/``: two valid series rows (one per class) plus ``rows``."""
    root = c.path("data")
    write_series(root / "good" / "a", n=4, uid="1.2.826.0.1.7.1")
    write_series(root / "good" / "b", n=4, uid="1.2.826.0.1.7.2")
    return c.csv(["good/a,normal,P1", "good/b,nodule,P2", *rows], name="data/rows.csv",
                 header="path,label,patient_id")


# ------------------------------------------------------------------------------- series that are not a stack
def series_missing_slice(c: Corpus) -> Scenario:
    root = _tree(c)
    bad = root / "nodule" / "patient9" / "ct"
    write_series(bad, n=6, skip=3, uid="1.2.826.0.1.9.9")
    return Scenario(_check(root), [str(bad), "missing slice(s)", "restore the missing files"],
                    forbidden=[c.outside], keep=[root])


def series_duplicate_position(c: Corpus) -> Scenario:
    root = _tree(c)
    bad = root / "normal" / "patient9" / "ct"
    write_series(bad, n=5, duplicate=True, uid="1.2.826.0.1.9.9")
    return Scenario(_check(root), [str(bad), "duplicated slice position", "remove the duplicate file"],
                    forbidden=[c.outside], keep=[root])


def series_inconsistent_spacing(c: Corpus) -> Scenario:
    root = _tree(c)
    bad = root / "nodule" / "patient9" / "ct"
    write_series(bad, n=4, names="ordered", uid="1.2.826.0.1.9.9")
    write_slice(bad / "IMG001.dcm", slice_hu(1, 6, 7), (0.0, 0.0, -48.0), uid="1.2.826.0.1.9.9", spacing=(0.5, 0.5))
    return Scenario(_check(root), [str(bad), "PixelSpacing", "split or resample"], forbidden=[c.outside],
                    keep=[root])


def series_inconsistent_orientation(c: Corpus) -> Scenario:
    root = _tree(c)
    bad = root / "nodule" / "patient9" / "ct"
    write_series(bad, n=4, names="ordered", uid="1.2.826.0.1.9.9")
    write_slice(bad / "IMG001.dcm", slice_hu(1, 6, 7), (0.0, 0.0, -48.0), (1, 0, 0, 0, 0.9, 0.43589),
                uid="1.2.826.0.1.9.9")
    return Scenario(_check(root), [str(bad), "inconsistent ImageOrientationPatient", "one folder per orientation"],
                    forbidden=[c.outside], keep=[root])


def series_irregular_steps(c: Corpus) -> Scenario:
    root = _tree(c)
    bad = root / "normal" / "patient9" / "ct"
    # variable spacing is resampled (issue 18 item 4); a sliver step that would blow the stack up is refused
    write_series(bad, n=5, step=5.0, names="ordered", uid="1.2.826.0.1.9.9")
    write_slice(bad / "IMGsliver.dcm", slice_hu(2, 6, 7), (0.0, 0.0, -50.0 + 10.2), uid="1.2.826.0.1.9.9")
    return Scenario(_check(root), [str(bad), "slice spacing varies from 0.20 to 5.00 mm", "re-export"],
                    forbidden=[c.outside], keep=[root])


# ------------------------------------------------------------------------- sample folders: several, one, none
def csv_mixed_series(c: Corpus) -> Scenario:
    root = c.path("data")
    write_series(root / "mixed", n=4, uid="1.2.826.0.1.8.1", prefix="a")
    write_series(root / "mixed", n=3, uid="1.2.826.0.1.8.2", prefix="b")  # a second series in the same folder
    csv = _csv(c, ["mixed,nodule,P3"])
    return Scenario(_check(csv), ["mixed", "holds 2 volumes", "mixed SeriesInstanceUIDs", "point to one series folder"],
                    forbidden=[c.outside], keep=[root])


def csv_one_slice(c: Corpus) -> Scenario:
    root = c.path("data")
    write_slice(root / "single" / "IMG000.dcm", slice_hu(0, 6, 7), (0.0, 0.0, 0.0))
    csv = _csv(c, ["single,nodule,P3"])
    return Scenario(_check(csv), ["single", "no series of two or more slices", "add the missing slices"],
                    forbidden=[c.outside], keep=[root])


def csv_no_dicom(c: Corpus) -> Scenario:
    root = c.path("data")
    (root / "study").mkdir(parents=True)
    (root / "study" / "report.txt").write_text("scanned on another day\n")
    csv = _csv(c, ["study,nodule,P3"])
    return Scenario(_check(csv), ["study", "without DICOM series or NIfTI", "point the row/folder at a series folder"],
                    forbidden=[c.outside], keep=[root])


# ----------------------------------------------------------------------------------------------- NIfTI
def _nifti_bad(value: float):
    def build(c: Corpus) -> Scenario:
        root = _tree(c)
        data = np.full((5, 4, 3), -1000.0, np.float32)
        data[1, 1, 1] = value
        bad = write_nifti(root / "nodule" / "patient9" / "ct.nii.gz", data)
        return Scenario(_train(c, root), [str(bad), "NaN/inf voxels", "fill or mask them", "--allow-missing"],
                        forbidden=[c.outside], keep=[root])

    build.__name__ = f"nifti_{value}"
    return build


# ------------------------------------------------------------------------------ 2-D vs volume (split file)
def _split(c: Corpus, root: Path, entry: list, split: str) -> Path:
    """A custom split file over the valid tree with ``entry`` added to ``split``."""
    base = {"train": [["normal/patient0/ct", 0, "normal", {"volume": True}],
                      ["nodule/patient0/ct", 1, "nodule", {"volume": True}]],
            "val": [],
            "test": [["normal/patient1/ct", 0, "normal", {"volume": True}],
                     ["nodule/patient1/ct", 1, "nodule", {"volume": True}]]}
    base[split].append(entry)
    p = c.path("data/split.json")
    p.write_text(json.dumps({**base, "meta": {"classnames": ["normal", "nodule"], "slices": "middle",
                                              "axis": "axial"}}))
    return p


def split_2d_as_volume(c: Corpus) -> Scenario:
    root = _tree(c)
    c.image(root / "nodule" / "patient9" / "photo.png", seed=3)
    split = _split(c, root, ["nodule/patient9/photo.png", 1, "nodule", {"volume": True}], "train")
    return Scenario(_train(c, root, "--split-file", str(split)),
                    ["nodule/patient9/photo.png", "2-D image file where a volume is expected",
                     "a DICOM series folder", "data check --pipeline custom"], forbidden=[c.outside], keep=[root])


def split_volume_as_2d(c: Corpus) -> Scenario:
    root = _tree(c)
    split = _split(c, root, ["nodule/patient1/ct", 1, "nodule"], "val")  # no "volume": read as a 2-D image
    return Scenario(_train(c, root, "--split-file", str(split)),
                    ["nodule/patient1/ct", "is a folder", "a DICOM series folder is a volume",
                     "data check --pipeline custom"], forbidden=[c.outside], keep=[root])


# ---------------------------------------------------------------------------------- options and pipelines
def window_unknown(c: Corpus) -> Scenario:
    root = _tree(c)
    return Scenario(_check(root, "--window", "lungs"), ["--window lungs", "unknown window", "lung, mediastinum"],
                    keep=[root])


def _preprocess(steps: list, *mentions: str, image: bool = False):
    """A pipeline YAML with ``steps`` as its MONAI ``preprocess:``; ``image``: the message names the image the
    step failed on (a step that only fails on real data stops the run at its first batch)."""
    def build(c: Corpus) -> Scenario:
        root = _tree(c)
        p = c.pipeline({"preprocess": steps})
        named = [f"failed on image {root}{os.sep}"] if image else []  # a sample under the data root
        return Scenario(["train", "--pipeline", str(p), "--data-root", str(root), "--output", str(c.path("out")),
                         "--max-steps", "2", "--no-mlflow", "--device", "cpu"], [p.name, *mentions, *named],
                        keep=[root, p])

    return build


# ------------------------------------------------------------------------------------- root confinement
def _outside_series(c: Corpus) -> Path:
    series = c.outside / "ct"
    write_series(series, n=4, uid="1.2.826.0.1.6.6")
    return series


def series_symlinked_out(c: Corpus) -> Scenario:
    root = _tree(c)
    (root / "nodule" / "patient9").mkdir(parents=True)
    os.symlink(_outside_series(c), root / "nodule" / "patient9" / "ct")
    return Scenario(_check(root), ["nodule/patient9/ct", "symlink", "outside the data root", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[root])


def csv_series_symlinked_out(c: Corpus) -> Scenario:
    root = c.path("data")
    root.mkdir(parents=True)
    os.symlink(_outside_series(c), root / "linked")
    csv = _csv(c, ["linked,nodule,P3"])
    return Scenario(_check(csv), ["'linked'", "symlink", "outside the data root", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[root])


def _row(row_id: str, klass: str, bad_input: str, build, slow: bool = False) -> Row:
    return Row(row_id, ITEM, klass, bad_input, build, slow, issue=ISSUE)


ROWS = [
    _row("series-missing-slice", "DICOM series", "series folder with slice 4 of 6 missing", series_missing_slice),
    _row("series-duplicate-position", "DICOM series", "two files at one slice position", series_duplicate_position),
    _row("series-inconsistent-spacing", "DICOM series", "one slice with another PixelSpacing", series_inconsistent_spacing),
    _row("series-inconsistent-orientation", "DICOM series", "one slice with another ImageOrientationPatient", series_inconsistent_orientation),
    _row("series-irregular-steps", "DICOM series", "slice steps of 5.0 mm with a 0.2 mm sliver", series_irregular_steps),
    _row("csv-mixed-series", "sample folder", "CSV row -> folder holding two SeriesInstanceUIDs", csv_mixed_series),
    _row("csv-one-slice", "sample folder", "CSV row -> series folder of one slice", csv_one_slice),
    _row("csv-no-dicom", "sample folder", "CSV row -> study folder without DICOM", csv_no_dicom),
    _row("nifti-nan", "NIfTI", "float NIfTI volume with a NaN voxel", _nifti_bad(np.nan)),
    _row("nifti-inf", "NIfTI", "float NIfTI volume with an inf voxel", _nifti_bad(np.inf)),
    _row("split-2d-as-volume", "2-D vs volume", "split entry `volume: true` -> a PNG", split_2d_as_volume),
    _row("split-volume-as-2d", "2-D vs volume", "split entry without `volume` -> a series folder", split_volume_as_2d),
    _row("window-unknown", "option validation", "`--window lungs`", window_unknown),
    _row("preprocess-unknown-transform", "MONAI preprocess", "`preprocess:` transform `ScaleIntensityRangedd`",
         _preprocess([{"name": "ScaleIntensityRangedd", "args": {}}], "is not allowed", "ScaleIntensityRanged")),
    _row("preprocess-bad-argument", "MONAI preprocess", "`preprocess:` argument `a_minn`",
         _preprocess([{"name": "ScaleIntensityRanged", "args": {"a_minn": 0, "a_max": 1, "b_min": 0, "b_max": 1}}],
                     "a_minn", "a_min")),
    _row("preprocess-fails-on-images", "MONAI preprocess", "`preprocess:` 3-D `SpatialPadd` on 2-D slices",
         _preprocess([{"name": "SpatialPadd", "args": {"spatial_size": [4, 4, 4]}}], "MONAI preprocess step 1",
                     "SpatialPadd", "check its arguments", image=True), slow=True),
    _row("series-symlinked-out", "root confinement", "patient folder holding a symlinked series folder outside the root", series_symlinked_out),
    _row("csv-series-symlinked-out", "root confinement", "CSV row -> symlinked series folder outside the root", csv_series_symlinked_out),
]


def _leaked_tags(text: str, folders: list[Path]) -> list[str]:
    found = [n for n in PATIENT_NEEDLES if n in text]
    for folder in folders:
        for f in (folder.rglob("*") if folder.is_dir() else []):
            if f.is_file() and f.suffix.lower() not in (".dcm", ".gz", ".nii", ".png", ".safetensors"):
                body = f.read_bytes().decode("utf-8", "replace")
                found += [f"{n} in {f}" for n in PATIENT_NEEDLES if n in body]
    return found


@pytest.mark.parametrize("row", [pytest.param(r, marks=[pytest.mark.slow] if r.slow else [], id=r.id) for r in ROWS])
def test_row(row: Row, tmp_path):
    outcome = run_row(row, tmp_path)
    leaked = _leaked_tags(outcome.text, [tmp_path / "out"])
    assert not leaked, f"patient tag values in the output: {leaked}\n{outcome.text[-3000:]}"


def test_follow_symlinks_admits_the_linked_series(tmp_path):
    """The refusal of ``series-symlinked-out`` is a policy, not a blind spot: with ``--follow-symlinks`` the
    linked series is read and counted (one more sample than the tree without it)."""
    c = Corpus(tmp_path)
    sc = series_symlinked_out(c)
    outcome = run_cli([*sc.argv, "--follow-symlinks", "--verify", "header"], cwd=c.root)
    assert outcome.code == 0 and "Traceback" not in outcome.text, outcome.text[-3000:]
    loaded = [l for l in outcome.text.splitlines() if "loaded:" in l]
    counts = [int(x) for x in loaded[0].replace(",", " ").split() if x.isdigit()] if loaded else []
    assert sum(counts) == 5, outcome.text[-3000:]  # 2 classes x 2 patients + the linked series
    assert not _leaked_tags(outcome.text, [])
