"""Masks as regions (issue 18 item 6): ``--slices roi`` picks the plane with the largest SEG/RTSTRUCT mask area,
``+crop[:MARGIN]`` cuts the volume to the mask's bounding box.

Expected masks, planes and boxes come from numpy on the voxels the fixtures draw (roi_synth.py), mapped to the
canonical LPS array through their patient coordinates - not through SimpleITK or the code under test."""
from __future__ import annotations

import math

import numpy as np
import pytest
from roi_synth import SPACING, square, write_ct, write_rtstruct, write_seg
from volume_synth import AXIAL, SAGITTAL

from medclipsvd.data import load_dataset
from medclipsvd.errors import DataError

N, ROWS, COLS, STEP = 8, 10, 12, 2.0


def _drawn() -> np.ndarray:
    """A cuboid over slices 2..4 with slice 3 drawn wider (the largest axial area)."""
    m = np.zeros((N, ROWS, COLS), bool)
    m[2:5, 3:6, 4:8] = True
    m[3, 2:8, 2:10] = True
    return m


def _canonical(native: np.ndarray, orientation) -> np.ndarray:
    """Where each native voxel (slice j, row, col) lands in the canonical (z superior, y posterior, x left)
    array, from its patient position (volume_synth: -50 n + j step n + col 0.8 r + row 0.8 c)."""
    r, c = np.array(orientation[:3]), np.array(orientation[3:])
    n = np.cross(r, c)
    j, row, col = np.meshgrid(*(np.arange(s) for s in native.shape), indexing="ij")
    p = (-50 + j[..., None] * STEP) * n + col[..., None] * SPACING * r + row[..., None] * SPACING * c
    step_of = {ax: (STEP if abs(n[ax]) > 0.5 else SPACING) for ax in range(3)}
    idx = [np.rint((p[..., ax] - p[..., ax].min()) / step_of[ax]).astype(int) for ax in (2, 1, 0)]
    out = np.zeros(tuple(i.max() + 1 for i in idx), bool)
    out[idx[0][native], idx[1][native], idx[2][native]] = True
    return out


def _box(mask: np.ndarray, grow=(0, 0, 0)):
    out = []
    for ax in range(3):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        out.append((max(0, hit.min() - grow[ax]), min(mask.shape[ax], hit.max() + 1 + grow[ax])))
    return out


def _study(tmp_path, orientation=AXIAL, kind="seg", drawn=None):
    files = write_ct(tmp_path / "c" / "p" / "ct", N, ROWS, COLS, orientation=orientation, step=STEP)
    if kind == "seg":
        write_seg(tmp_path / "c" / "p" / "seg" / "seg.dcm", files, _drawn() if drawn is None else drawn)
    return files, str(tmp_path / "c" / "p" / "ct")


@pytest.mark.parametrize("orientation", [AXIAL, SAGITTAL], ids=["axial", "sagittal"])
def test_seg_mask_lands_on_the_drawn_voxels(tmp_path, orientation):
    from medclipsvd.data.volumes.masks import canonical_mask

    _, series = _study(tmp_path, orientation)
    mask, spacing = canonical_mask(series)
    expected = _canonical(_drawn(), orientation)
    assert mask.shape == expected.shape and (mask == expected).all()
    assert mask.sum() == _drawn().sum()


@pytest.mark.parametrize("orientation", [AXIAL, SAGITTAL], ids=["axial", "sagittal"])
@pytest.mark.parametrize("axis,dim", [("axial", 0), ("coronal", 1), ("sagittal", 2)])
def test_roi_plane_and_crop_box(tmp_path, orientation, axis, dim):
    from medclipsvd.data.volumes.read import read_volume
    from medclipsvd.data.volumes.roi import focus
    from medclipsvd.data.volumes.slicing import parse_slices

    _, series = _study(tmp_path, orientation)
    expected = _canonical(_drawn(), orientation)
    area = expected.sum(axis=tuple(a for a in range(3) if a != dim))
    vol = read_volume(series)
    whole, k = focus(vol, parse_slices("roi"), dim, None)
    assert whole.array.shape == vol.array.shape and k == int(np.argmax(area))
    box = _box(expected)
    cut, k = focus(vol, parse_slices("roi+crop:0vox"), dim, None)
    assert cut.array.shape == tuple(hi - lo for lo, hi in box)
    assert (cut.array == vol.array[tuple(slice(lo, hi) for lo, hi in box)]).all()
    assert k == int(np.argmax(area[box[dim][0]:box[dim][1]]))
    # a margin in mm is at least that many mm on each side: ceil(mm / spacing) voxels per axis
    spacing_zyx = (STEP, SPACING, SPACING) if orientation == AXIAL else (SPACING, SPACING, STEP)
    grown = _box(expected, [math.ceil(3.0 / s) for s in spacing_zyx])
    cut, _ = focus(vol, parse_slices("middle+crop:3mm"), dim, None)
    assert cut.array.shape == tuple(hi - lo for lo, hi in grown)


def test_roi_view_is_the_largest_plane_cropped(tmp_path):
    """The rendered model input: plane 3 (HU -200 everywhere but the marker) cut to rows 2..7, cols 2..9."""
    from medclipsvd.data.volumes.views import read_view

    _, series = _study(tmp_path)
    img = read_view(series, None, "roi+crop:0vox|axial|2000/0")  # W2000/L0: value = (HU + 1000) / 2000
    assert img.shape == (6, 8, 3)
    np.testing.assert_allclose(img, (-500 + 100 * 3 + 1000) / 2000, atol=1e-6)
    full = read_view(series, None, "roi|axial|2000/0")
    assert full.shape == (ROWS, COLS, 3) and abs(full[5, 5, 0] - 0.4) < 1e-6


@pytest.mark.parametrize("orientation", [AXIAL, SAGITTAL], ids=["axial", "sagittal"])
def test_rtstruct_contours_with_a_hole(tmp_path, orientation):
    """Squares with half-pixel corners: the pixels whose centres are inside are known exactly; a contour
    inside another of the same ROI is a hole; a second ROI is added to the first."""
    from medclipsvd.data.volumes.masks import canonical_mask

    files, series = _study(tmp_path, orientation, kind="rtstruct")
    roi1 = [(2, square(1.5, 7.5, 1.5, 9.5)), (2, square(3.5, 5.5, 3.5, 6.5)), (4, square(2.5, 4.5, 3.5, 5.5))]
    roi2 = [(5, square(0.5, 2.5, 0.5, 1.5))]
    write_rtstruct(tmp_path / "c" / "p" / "rt" / "rs.dcm", files, [roi1, roi2])
    expected = np.zeros((N, ROWS, COLS), bool)
    expected[2, 2:8, 2:10] = True
    expected[2, 4:6, 4:7] = False
    expected[4, 3:5, 4:6] = True
    expected[5, 1:3, 1:2] = True
    mask, _ = canonical_mask(series)
    assert (mask == _canonical(expected, orientation)).all()


def test_rtstruct_matched_by_referenced_instances_when_the_series_uid_differs(tmp_path):
    from medclipsvd.data.volumes.masks import canonical_mask

    files, series = _study(tmp_path, kind="rtstruct")
    write_rtstruct(tmp_path / "c" / "p" / "rs.dcm", files, [[(1, square(0.5, 3.5, 0.5, 3.5))]],
                   series_uid="1.2.826.0.1.99.12345")
    mask, _ = canonical_mask(series)
    assert mask.sum() == 9 and mask[1].sum() == 9


def test_dataset_listing_and_prediction_use_the_mask(tmp_path):
    from medclipsvd.data.inputs import read_input_views
    from medclipsvd.data.volumes.policy import InputPolicy

    for cls in ("a", "b"):
        files = write_ct(tmp_path / "root" / cls / "p" / "ct", N, ROWS, COLS, uid=f"1.2.826.0.1.99.{len(cls) + 5}{ord(cls)}")
        write_seg(tmp_path / "root" / cls / "p" / "seg.dcm", files, _drawn())
    s = load_dataset("custom", tmp_path / "root", slices="roi+crop")
    allx = s.train + s.val + s.test
    assert len(allx) == 2 and all(x.view == "roi+crop|axial|auto" and x.index is None for x in allx)
    box = _box(_canonical(_drawn(), AXIAL), (math.ceil(10 / STEP), math.ceil(10 / SPACING), math.ceil(10 / SPACING)))
    every = load_dataset("custom", tmp_path / "root", slices="all+crop")
    assert len(every.train + every.val + every.test) == 2 * (box[0][1] - box[0][0])
    views = read_input_views(tmp_path / "root" / "a" / "p" / "ct", InputPolicy(slices="roi", window="2000/0"))
    assert len(views) == 1 and abs(float(views[0][5, 5, 0]) - 0.4) < 1e-6


def test_no_mask_empty_mask_and_mask_elsewhere_are_one_line_errors(tmp_path):
    from medclipsvd.data.volumes.policy import InputPolicy

    files, series = _study(tmp_path / "none", kind=None)
    with pytest.raises(DataError, match=r"ct: --slices roi / \+crop needs a DICOM SEG or RTSTRUCT .*none was found"):
        InputPolicy(slices="roi").planes(series)
    files, series = _study(tmp_path / "empty", kind="rtstruct")
    write_rtstruct(tmp_path / "empty" / "c" / "p" / "rs.dcm", files, [])
    with pytest.raises(DataError, match=r"rs.dcm\) that references this series is empty"):
        InputPolicy(slices="all+crop").planes(series)
    files, series = _study(tmp_path / "off", kind=None)
    write_seg(tmp_path / "off" / "c" / "p" / "seg.dcm", files, _drawn(), shift_mm=(0.0, 0.0, 300.0))
    with pytest.raises(DataError, match=r"none of it lies inside the series' volume"):
        InputPolicy(slices="roi").planes(series)


def test_slice_policy_spelling():
    from medclipsvd.data.volumes.slicing import parse_slices

    assert parse_slices("roi").mode == "roi" and parse_slices("roi").single and parse_slices("roi").crop is None
    assert parse_slices("roi+crop").crop == (10.0, "mm")
    assert parse_slices("ROI+crop:2.5mm").crop == (2.5, "mm")
    p = parse_slices("slices:4+crop:3vox")
    assert (p.mode, p.n, p.crop, p.spec) == ("slices", 4, (3.0, "vox"), "slices:4+crop:3vox")
    for bad in ("roi+crop:5", "roi+crop:-1mm", "roi+crop:1.5vox", "roi+zoom", "roi+crop:mm", "sometimes+crop"):
        with pytest.raises(DataError, match="unknown"):
            parse_slices(bad)


def test_mask_region_reports_plane_in_whole_volume_and_box(tmp_path):
    from medclipsvd.data.volumes.views import mask_region as region

    _, series = _study(tmp_path)
    expected = _canonical(_drawn(), AXIAL)
    got = region(series, "roi+crop:1vox", "coronal")
    assert got["box"] == [[lo, hi] for lo, hi in _box(expected, (1, 1, 1))]
    assert got["plane"] == int(np.argmax(expected.sum(axis=(0, 2)))) and got["mask_voxels"] == int(expected.sum())
    assert region(series, "middle")["box"] == [[0, N], [0, ROWS], [0, COLS]]


def test_monai_bundle_transform_reads_the_roi_view(tmp_path):
    """An exported bundle's LoadInputd gets the recorded slices string and finds the input series' mask."""
    from medclipsvd.export.runtime import LoadInputd

    _, series = _study(tmp_path)
    views = LoadInputd(slices="roi+crop:0vox", window="2000/0")({"image": series})
    assert len(views) == 1 and tuple(views[0]["image"].shape) == (3, 6, 8)
    assert abs(float(views[0]["image"].mean()) - 0.4) < 1e-6


def test_fractional_seg_counts_voxels_above_half(tmp_path):
    from medclipsvd.data.volumes.masks import canonical_mask

    files, series = _study(tmp_path, kind=None)
    prob = np.zeros((N, ROWS, COLS), np.float32)
    prob[1:3, 2:4, 2:5] = 0.4   # below half: not the region
    prob[4:6, 5:8, 6:9] = 0.9
    write_seg(tmp_path / "c" / "p" / "seg.dcm", files, prob, fractional=True)
    mask, _ = canonical_mask(series)
    assert (mask == _canonical(prob > 0.5, AXIAL)).all() and mask.sum() == 2 * 3 * 3


def test_mask_pattern_chooses_segments_and_rois(tmp_path):
    """+mask:PATTERN: a SEG label map with two segments, an RTSTRUCT with a body outline and a GTV."""
    from medclipsvd.data.volumes.roi import region as region_of
    from medclipsvd.data.volumes.slicing import parse_slices

    files, series = _study(tmp_path / "seg", kind=None)
    labels = np.zeros((N, ROWS, COLS), np.uint8)
    labels[1:3, 1:3, 1:3] = 1                     # "Liver": slices 1..2
    labels[5:7, 6:9, 7:11] = 2                    # "GTV primary": slices 5..6
    write_seg(tmp_path / "seg" / "c" / "p" / "seg.dcm", files, labels, labels=("Liver", "GTV primary"))
    for spec, drawn in (("roi+crop:0vox+mask:gtv*", labels == 2), ("roi+mask:LIVER", labels == 1),
                        ("roi+crop:0vox", labels > 0)):
        expected = _canonical(drawn, AXIAL)
        got = region_of(series, parse_slices(spec), 0)
        assert got["mask_voxels"] == int(expected.sum())
        if "crop" in spec:
            assert got["box"] == [[lo, hi] for lo, hi in _box(expected)]
    with pytest.raises(DataError, match=r"no segment or ROI of its mask \(seg.dcm\) is named like 'kidney\*'; "
                                        r"it holds 'Liver', 'GTV primary'"):
        region_of(series, parse_slices("roi+mask:kidney*"), 0)

    files, series = _study(tmp_path / "rt", kind="rtstruct")
    body = [(j, square(-0.5, ROWS - 0.5, -0.5, COLS - 0.5)) for j in range(N)]
    gtv = [(4, square(2.5, 4.5, 3.5, 5.5))]
    write_rtstruct(tmp_path / "rt" / "c" / "p" / "rs.dcm", files, [body, gtv])  # ROINames roi1, roi2
    assert region_of(series, parse_slices("roi+crop:0vox+mask:roi2"), 0)["box"] == [[4, 5], [3, 5], [4, 6]]
    assert region_of(series, parse_slices("roi+crop:0vox"), 0)["box"] == [[0, N], [0, ROWS], [0, COLS]]


def test_mask_pattern_spelling():
    from medclipsvd.data.volumes.slicing import parse_slices

    p = parse_slices("roi+crop:5mm+mask:GTV*")
    assert (p.mode, p.crop, p.mask) == ("roi", (5.0, "mm"), "gtv*")
    assert parse_slices("middle+mask:x*+crop").mask == "x*"
    for bad in ("middle+mask:x", "roi+mask:", "roi+crop+crop", "roi+mask:a+mask:b", "roi+mask:a|b"):
        with pytest.raises(DataError, match="slice policy"):
            parse_slices(bad)


def test_served_model_finds_no_mask_outside_its_serving_root(tmp_path):
    """The series is the serving root itself and its SEG lies beside it (outside the root): a local predict
    finds it, a served model does not read it."""
    from medclipsvd.data.volumes.policy import InputPolicy
    from medclipsvd.serving.inputs import PathPolicy, read_item

    files = write_ct(tmp_path / "serve", N, ROWS, COLS)
    write_seg(tmp_path / "seg" / "seg.dcm", files, _drawn())
    view = InputPolicy(slices="roi", window="2000/0")
    local = read_item(str(tmp_path / "serve"), None, 0, PathPolicy.local(), view)
    assert len(local) == 1 and abs(float(local[0][5, 5, 0]) - 0.4) < 1e-6
    with pytest.raises(DataError):
        read_item(".", None, 0, PathPolicy.under(tmp_path / "serve"), view)
    from medclipsvd.data.volumes.masks import search_folders, search_within

    with search_within(tmp_path / "serve"):
        assert search_folders(str(tmp_path / "serve")) == [str(tmp_path / "serve")]
    assert str(tmp_path / "seg") in search_folders(str(tmp_path / "serve"))
