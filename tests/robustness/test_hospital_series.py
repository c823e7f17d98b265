"""Robustness rows for study exports as PACS and research archives write them (issue 18 items 1-3): non-image
DICOM objects and localizers beside the CT series, secondary captures, bad series filters, several bad series
at once, the --on-bad-series policy, and patient identity from the headers.

Exports are written by pydicom (tests/data/export_synth.py) with fake patient tags; on top of the harness's
five rules each row checks that no tag value (PatientID included) appears in the output, and the exit-0 rows
check the number of samples loaded (one per CT series written)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from harness import Corpus, Row, Scenario, run_row

_DATA_TESTS = Path(__file__).resolve().parents[1] / "data"
if str(_DATA_TESTS) not in sys.path:
    sys.path.insert(0, str(_DATA_TESTS))
from export_synth import retag, write_ct, write_object, write_secondary_capture, write_study  # noqa: E402
from volume_synth import PATIENT_NEEDLES, write_series  # noqa: E402

CHECK = ["data", "check", "--dataset", "custom", "--verify", "header"]
MRNS = ["MRN-77001", "MRN-77002", "MRN-77003", "MRN-77004"]


def _export(c: Corpus, extras=("rtstruct", "rtdose", "sr"), localizer=True) -> Path:
    """data/<class>/<accession>/{ct, scout, extras}: 2 classes x 2 patients, one CT series per study."""
    root = c.path("data")
    for i, (cls, p) in enumerate((("normal", 0), ("normal", 1), ("nodule", 0), ("nodule", 1))):
        write_study(root / cls / f"ACC{i}{p}", patient_id=MRNS[i], study=f"1.2.826.0.5.{i}",
                    uid=f"1.2.826.0.6.{i}", extras=extras, localizer=localizer)
    return root


def export_rt_sr_localizer(c: Corpus) -> Scenario:
    root = _export(c, extras=("rtstruct", "rtdose", "rtplan", "seg", "sr"))
    return Scenario([*CHECK, "--data-root", str(root)], ["24 series/object(s) left out", "20 not image",
                                                          "4 filtered", "data check"], exit_code=0, keep=[root])


def export_ko_pr_dirfile(c: Corpus) -> Scenario:
    root = _export(c, extras=("ko", "pr", "dirfile"), localizer=False)
    write_object(root / "normal" / "DICOMDIR", "dirfile")
    return Scenario([*CHECK, "--data-root", str(root)], ["13 series/object(s) left out", "13 not image"],
                    exit_code=0, keep=[root])


def secondary_capture_in_study(c: Corpus) -> Scenario:
    root = _export(c, extras=(), localizer=False)
    write_secondary_capture(root / "nodule" / "ACC20" / "sc.dcm", patient_id=MRNS[2], study="1.2.826.0.5.2")
    return Scenario([*CHECK, "--data-root", str(root)], ["1 series/object(s) left out", "1 filtered",
                                                          "include="], exit_code=0, keep=[root])


def series_filter_unknown_key(c: Corpus) -> Scenario:
    root = _export(c, extras=(), localizer=False)
    return Scenario([*CHECK, "--data-root", str(root), "--series", "colour=red"],
                    ["--series", "unknown key", "colour", "per_study"], keep=[root])


def series_filter_selects_nothing(c: Corpus) -> Scenario:
    root = _export(c, extras=(), localizer=False)
    return Scenario([*CHECK, "--data-root", str(root), "--series", "modality=MR"],
                    [str(root), "none of the 4 series", "data check", "--series"], keep=[root])


def _two_bad(c: Corpus) -> Path:
    root = _export(c, extras=(), localizer=False)
    write_series(root / "normal" / "ACC90" / "gap", n=6, skip=3, uid="1.2.826.0.9.1")
    bad = write_series(root / "nodule" / "ACC91" / "tilted", n=4, uid="1.2.826.0.9.2", names="ordered")
    retag(bad[:1], ImageOrientationPatient=["0", "1", "0", "0", "0", "-1"])
    return root


def two_bad_series(c: Corpus) -> Scenario:
    root = _two_bad(c)
    return Scenario([*CHECK, "--data-root", str(root)], ["2 series cannot be used", "ACC90/gap", "missing slice",
                                                          "ACC91/tilted", "orientation", "--on-bad-series skip"],
                    keep=[root])


def two_bad_series_skipped(c: Corpus) -> Scenario:
    root = _two_bad(c)
    return Scenario([*CHECK, "--data-root", str(root), "--on-bad-series", "skip"],
                    ["2 series/object(s) left out", "2 refused"], exit_code=0, keep=[root])


def on_bad_series_unknown(c: Corpus) -> Scenario:
    root = _export(c, extras=(), localizer=False)
    return Scenario([*CHECK, "--data-root", str(root), "--on-bad-series", "ignore"],
                    ["--on-bad-series ignore", "error or skip"], keep=[root])


def patient_under_two_labels(c: Corpus) -> Scenario:
    root = _export(c, extras=(), localizer=False)
    write_ct(root / "nodule" / "ACC99", patient_id=MRNS[0], study="1.2.826.0.5.99", uid="1.2.826.0.6.99")
    return Scenario([*CHECK, "--data-root", str(root)], ["1 patient id(s) under two or more labels", "pt-",
                                                          "(nodule / normal)"], exit_code=0, keep=[root])


def patient_in_two_given_splits(c: Corpus) -> Scenario:
    """Given train/test folders; the same PatientID (two studies, accession-named folders) in both."""
    root = c.path("data")
    for split in ("train", "test"):
        for k, cls in enumerate(("normal", "nodule")):
            write_ct(root / split / cls / f"ACC{split}{k}", patient_id=f"MRN-{split}-{k}", study=f"1.3.{len(split)}.{k}",
                     uid=f"1.4.{len(split)}.{k}")
    write_ct(root / "test" / "normal" / "ACC55", patient_id="MRN-train-0", study="1.3.55", uid="1.4.55")
    return Scenario([*CHECK, "--data-root", str(root)], ["patient id(s) appear in more than one split", "pt-"],
                    keep=[root])


def _row(row_id: str, item: int, klass: str, bad_input: str, build) -> Row:
    return Row(row_id, item, klass, bad_input, build, issue=18)


ROWS = [
    _row("export-rt-sr-localizer", 1, "study export", "RTSTRUCT, RTDOSE, RTPLAN, SEG, SR and a 3-plane localizer "
         "beside each CT series", export_rt_sr_localizer),
    _row("export-ko-pr-dirfile", 1, "study export", "KO, PR and a Philips DIRFILE beside each CT series, a DICOMDIR",
         export_ko_pr_dirfile),
    _row("secondary-capture-in-study", 1, "study export", "a secondary capture beside the CT series",
         secondary_capture_in_study),
    _row("series-filter-unknown-key", 1, "option validation", "`--series colour=red`", series_filter_unknown_key),
    _row("series-filter-selects-nothing", 1, "study export", "`--series modality=MR` on CT studies",
         series_filter_selects_nothing),
    _row("two-bad-series", 2, "DICOM series", "a series with a missing slice and one with mixed orientation",
         two_bad_series),
    _row("two-bad-series-skipped", 2, "DICOM series", "the same with `--on-bad-series skip`", two_bad_series_skipped),
    _row("on-bad-series-unknown", 2, "option validation", "`--on-bad-series ignore`", on_bad_series_unknown),
    _row("patient-under-two-labels", 3, "patient identity", "one PatientID in a normal and a nodule study",
         patient_under_two_labels),
    _row("patient-in-two-given-splits", 3, "patient identity", "one PatientID in train/ and test/ (accession "
         "folders)", patient_in_two_given_splits),
]
LOADED = {"export-rt-sr-localizer": 4, "export-ko-pr-dirfile": 4, "secondary-capture-in-study": 4,
          "two-bad-series-skipped": 4, "patient-under-two-labels": 5}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_row(row: Row, tmp_path):
    outcome = run_row(row, tmp_path)
    leaked = [n for n in PATIENT_NEEDLES + MRNS + ["MRN-train", "MRN-test"] if n in outcome.text]
    assert not leaked, f"patient tag values in the output: {leaked}\n{outcome.text[-3000:]}"
    if row.id in LOADED:  # exactly one sample per CT series written, nothing else
        line = next(l for l in outcome.text.splitlines() if "loaded:" in l)
        assert sum(int(x) for x in line.replace(",", " ").split() if x.isdigit()) == LOADED[row.id], outcome.text
