"""Robustness rows for masks as regions (issue 18 item 6): ``--slices roi`` / ``+crop`` where the mask a series
needs is missing, empty, drawn elsewhere or only outside the data root, a +mask pattern that matches no
segment, and a misspelt crop margin.

The CT series and their SEG / RTSTRUCT objects are written by pydicom and highdicom (tests/data/roi_synth.py).
A series without a usable mask is refused like a broken series: one line naming it and the ways on, and
``--on-bad-series skip`` leaves it out with a warning. No patient tag value appears in the output."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from harness import Corpus, Row, Scenario, run_row

_DATA_TESTS = Path(__file__).resolve().parents[1] / "data"
if str(_DATA_TESTS) not in sys.path:
    sys.path.insert(0, str(_DATA_TESTS))
from roi_synth import write_ct, write_rtstruct, write_seg  # noqa: E402
from volume_synth import PATIENT_NEEDLES  # noqa: E402

CHECK = ["data", "check", "--pipeline", "custom", "--verify", "header"]


def _mask() -> np.ndarray:
    m = np.zeros((6, 6, 7), bool)
    m[2:4, 1:4, 2:5] = True
    return m


def _tree(c: Corpus, masked=("a/p1", "a/p2", "b/p3", "b/p4")) -> tuple[Path, dict]:
    """data/<class>/<patient>/ct with a SEG in data/<class>/<patient>/seg/ for the patients in ``masked``."""
    root = c.path("data")
    files = {}
    for i, rel in enumerate(("a/p1", "a/p2", "b/p3", "b/p4")):
        files[rel] = write_ct(root / rel / "ct", 6, 6, 7, uid=f"1.2.826.0.1.98.{i}")
        if rel in masked:
            write_seg(root / rel / "seg" / "seg.dcm", files[rel], _mask())
    return root, files


def mask_references_missing_series(c: Corpus) -> Scenario:
    """b/p4's SEG was drawn on a series that is not in the export."""
    root, _ = _tree(c, masked=("a/p1", "a/p2", "b/p3"))
    other = write_ct(c.path("elsewhere") / "ct", 6, 6, 7, uid="1.2.826.0.1.98.77")
    write_seg(root / "b" / "p4" / "seg" / "seg.dcm", other, _mask())
    return Scenario([*CHECK, "--data-root", str(root), "--slices", "roi"],
                    ["b/p4/ct", "SEG or RTSTRUCT", "reference other series", "seg.dcm", "--on-bad-series skip"],
                    forbidden=[c.outside], keep=[root])


def empty_mask(c: Corpus) -> Scenario:
    root, files = _tree(c, masked=("a/p1", "a/p2", "b/p3"))
    write_rtstruct(root / "b" / "p4" / "rt" / "rs.dcm", files["b/p4"], [])
    return Scenario([*CHECK, "--data-root", str(root), "--slices", "roi+crop"],
                    ["b/p4/ct", "rs.dcm", "is empty", "--slices", "--on-bad-series skip"],
                    forbidden=[c.outside], keep=[root])


def mask_not_overlapping(c: Corpus) -> Scenario:
    root, files = _tree(c, masked=("a/p1", "a/p2", "b/p3"))
    write_seg(root / "b" / "p4" / "seg" / "seg.dcm", files["b/p4"], _mask(), shift_mm=(0.0, 0.0, 250.0))
    return Scenario([*CHECK, "--data-root", str(root), "--slices", "middle+crop:5mm"],
                    ["b/p4/ct", "none of it lies inside", "seg.dcm", "--on-bad-series skip"],
                    forbidden=[c.outside], keep=[root])


def mask_only_outside_root(c: Corpus) -> Scenario:
    """The only mask of b/p4 lies outside the data root: never opened, the series has no mask."""
    root, files = _tree(c, masked=("a/p1", "a/p2", "b/p3"))
    write_seg(c.outside / "seg.dcm", files["b/p4"], _mask())
    return Scenario([*CHECK, "--data-root", str(root), "--slices", "roi"],
                    ["b/p4/ct", "none was found", "--on-bad-series skip"], forbidden=[c.outside], keep=[root])


def no_mask_skipped(c: Corpus) -> Scenario:
    root, _ = _tree(c, masked=("a/p1", "a/p2", "b/p3"))
    return Scenario([*CHECK, "--data-root", str(root), "--slices", "roi", "--on-bad-series", "skip"],
                    ["series/object(s) left out", "1 refused", "data check"], exit_code=0,
                    forbidden=[c.outside], keep=[root])


def mask_pattern_matches_nothing(c: Corpus) -> Scenario:
    root, _ = _tree(c)
    return Scenario([*CHECK, "--data-root", str(root), "--slices", "roi+mask:kidney*"],
                    ["4 series cannot be used", "named like 'kidney*'", "'lesion'", "--on-bad-series skip"],
                    forbidden=[c.outside], keep=[root])


def crop_margin_without_unit(c: Corpus) -> Scenario:
    root, _ = _tree(c, masked=("a/p1",))
    return Scenario([*CHECK, "--data-root", str(root), "--slices", "roi+crop:5"],
                    ["--slices roi+crop:5", "crop:MMmm", "crop:Nvox"], forbidden=[c.outside], keep=[root])


def _row(row_id: str, klass: str, bad_input: str, build) -> Row:
    return Row(row_id, 6, klass, bad_input, build, issue=18)


ROWS = [
    _row("roi-mask-references-missing-series", "masks", "`--slices roi`; a SEG beside the series references a "
         "series missing from the export", mask_references_missing_series),
    _row("roi-empty-mask", "masks", "`--slices roi+crop`; the series' RTSTRUCT has no contour", empty_mask),
    _row("roi-mask-not-overlapping", "masks", "`--slices middle+crop:5mm`; the series' SEG lies 250 mm away",
         mask_not_overlapping),
    _row("roi-mask-only-outside-root", "masks", "`--slices roi`; the series' only SEG lies outside the data root",
         mask_only_outside_root),
    _row("roi-no-mask-skipped", "masks", "`--slices roi --on-bad-series skip`; one series without a mask",
         no_mask_skipped),
    _row("roi-mask-pattern-matches-nothing", "masks", "`--slices roi+mask:kidney*`; the SEGs hold 'lesion' only",
         mask_pattern_matches_nothing),
    _row("roi-crop-margin-without-unit", "option validation", "`--slices roi+crop:5`", crop_margin_without_unit),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_row(row, tmp_path):
    out = run_row(row, tmp_path)
    assert not [n for n in PATIENT_NEEDLES if n in out.text]  # SEG/RTSTRUCT copies of the patient tags stay unread
    if row.id == "roi-no-mask-skipped":
        assert "volumes: 3 (3 samples; view roi|axial|auto)" in out.text
