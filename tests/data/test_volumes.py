"""Volumes: series discovery and ordering, HU, windows, slice policies, bad input - on synthetic series with
known HU values (tests/data/volume_synth.py) - and the real series of ../shared/data/volumes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from volume_synth import (PATIENT_NEEDLES, SAGITTAL, slice_hu, write_multiframe, write_nifti, write_series,
                          write_slice)

from medclipsvd.data import load_dataset
from medclipsvd.data.volumes.slicing import parse_slices, plane_indices
from medclipsvd.data.volumes.read import load_volume_sample, read_volume
from medclipsvd.data.volumes.selection import scan_folder
from medclipsvd.data.volumes.series import SERIES_SEP
from medclipsvd.data.volumes.windows import WINDOW_PRESETS, apply_hu_window, parse_window
from medclipsvd.errors import DataError

SHARED_VOL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "volumes"
N = 6


def _hu_column(vol) -> np.ndarray:
    """HU of each axial plane away from the marker voxel."""
    return vol.array[:, -1, -1]


# ----------------------------------------------------------------------------------- ordering (table)
ORDERING = {
    "shuffled names, InstanceNumber 1 everywhere": dict(names="shuffled"),
    "reversed names": dict(names="reversed"),
    "empty UIDs in every file": dict(names="shuffled", uid=""),
    "missing UIDs": dict(names="reversed", uid=None),
    "gantry tilt": dict(names="shuffled", tilt_mm=0.7),
    "rescale slope 2": dict(names="shuffled", slope=2.0, intercept=-1000.0),
}


@pytest.mark.parametrize("case", list(ORDERING), ids=list(ORDERING))
def test_series_ordered_by_position_with_exact_hu(tmp_path, case):
    files = write_series(tmp_path / "s", n=N, **ORDERING[case])
    vol = read_volume(tmp_path / "s")
    assert vol.is_ct and vol.array.shape == (N, 6, 7)
    np.testing.assert_array_equal(_hu_column(vol), -500.0 + 100.0 * np.arange(N))  # plane k = slice k
    assert vol.spacing[2] == pytest.approx(2.0, rel=1e-6) and vol.spacing[:2] == pytest.approx((0.8, 0.8))
    assert vol.array[0, 0, 1] == 1000.0  # marker: first row, second column (no flips in axial)
    assert len(files) == N


def test_sagittal_acquisition_is_reoriented_to_canonical(tmp_path):
    # slices along -x (patient's right); canonical LPS puts x (left) on the last array axis
    write_series(tmp_path / "s", n=N, orientation=SAGITTAL, names="shuffled")
    vol = read_volume(tmp_path / "s")
    assert vol.array.shape == (6, 7, N)  # (z <- rows, which run -z; y <- columns, +y; x <- slices)
    # slice j sits at x = -50 - 2j: the leftmost (largest x) is j = 0, at the last x index
    np.testing.assert_array_equal(vol.array[0, 0, ::-1], -500.0 + 100.0 * np.arange(N))
    assert vol.array[-1, 1, 0] == 1000.0  # marker (row 0 = highest z, column 1) at the top z plane
    sag = load_volume_sample(tmp_path / "s", axis="sagittal", slices="all", window="abdomen")
    assert sag.shape[0] == N


def test_two_series_in_one_folder_and_mixed_modalities(tmp_path):
    d = tmp_path / "study"
    write_series(d, n=4, uid="1.2.3.4", modality="CT", prefix="a")
    write_series(d, n=5, uid="1.2.3.5", modality="MR", prefix="b", intercept=0.0,
                 hu=lambda j, r, c: np.full((r, c), 100.0 * (j + 1)))
    vols, flat = scan_folder(d)
    assert sorted(v.n_slices for v in vols) == [4, 5] and flat == []
    assert all(SERIES_SEP in v.path for v in vols)
    by_mod = {v.modality: v.path for v in vols}
    assert read_volume(by_mod["CT"]).is_ct and not read_volume(by_mod["MR"]).is_ct
    with pytest.raises(DataError, match=r"holds 2 volumes \(mixed SeriesInstanceUIDs"):
        read_volume(d)  # one sample folder with two series: which one?
    # MR ignores HU windows: percentile scaling of the volume
    mr = load_volume_sample(by_mod["MR"], window="lung")
    assert 0.0 <= mr.min() and mr.max() <= 1.0 and mr.max() > 0.4


# ----------------------------------------------------------------------------------- bad input (table)
BAD = {
    "missing slice": (dict(skip=3), r"missing slice\(s\) between .* \(gap 4.00 mm, usual step 2.00 mm\)"),
    "duplicated position": (dict(duplicate=True), r"duplicated slice position"),
    "inconsistent spacing": (None, r"inconsistent matrix size or PixelSpacing"),
    "inconsistent orientation": (None, r"inconsistent ImageOrientationPatient"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_series_one_line_error_names_folder(tmp_path, case):
    d = tmp_path / "bad"
    kw, pattern = BAD[case]
    if case == "inconsistent spacing":
        write_series(d, n=4, names="ordered")
        write_slice(d / "IMG001.dcm", slice_hu(1, 6, 7), (0.0, 0.0, -48.0), spacing=(0.5, 0.5))
    elif case == "inconsistent orientation":
        write_series(d, n=4, names="ordered")
        write_slice(d / "IMG001.dcm", slice_hu(1, 6, 7), (0.0, 0.0, -48.0), orientation=(1, 0, 0, 0, 0.9, 0.43589))
    else:
        write_series(d, n=6, **kw)
    with pytest.raises(DataError, match=pattern) as err:
        read_volume(d)
    msg = str(err.value)
    assert "\n" not in msg and str(d) in msg
    assert not any(n in msg for n in PATIENT_NEEDLES)


def test_one_slice_series_and_2d_where_volume_expected(tmp_path):
    write_slice(tmp_path / "one" / "x.dcm", slice_hu(0, 6, 7), (0, 0, 0))
    with pytest.raises(DataError, match="no series of two or more slices"):
        read_volume(tmp_path / "one")
    with pytest.raises(DataError, match="single 2-D DICOM image where a volume is expected"):
        read_volume(tmp_path / "one" / "x.dcm")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="study folder without DICOM"):
        read_volume(tmp_path / "empty")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="2-D image file where a volume is expected"):
        read_volume(tmp_path / "a.png")


def test_volume_where_2d_file_expected(tmp_path):
    from medclipsvd.data import read_image

    write_series(tmp_path / "s", n=3)
    with pytest.raises(DataError, match="is a folder"):
        read_image(tmp_path / "s")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nifti_nan_inf(tmp_path, bad):
    data = np.zeros((5, 4, 3), np.float32)
    data[1, 1, 1] = bad
    p = write_nifti(tmp_path / "v.nii.gz", data)
    with pytest.raises(DataError, match=r"v.nii.gz: volume contains 1 NaN/inf voxels"):
        read_volume(p)


def test_nifti_volume_canonical_and_ct_detection(tmp_path):
    data = np.zeros((4, 5, 6), np.int16)  # RAS affine: x right->left reversed by LPS
    data[:, :, :] = np.arange(6)[None, None, :] * 10 - 1000  # z ramp
    data[0, 0, 0] = 77
    vol = read_volume(write_nifti(tmp_path / "ct.nii.gz", data))
    assert vol.array.shape == (6, 5, 4) and vol.is_ct
    np.testing.assert_array_equal(vol.array[:, 2, 1], np.arange(6) * 10 - 1000)
    assert vol.array[0, -1, -1] == 77  # RAS index (0,0) = right/posterior... -> LPS last x, last y
    mr = read_volume(write_nifti(tmp_path / "mr.nii.gz", np.ones((4, 5, 6), np.int16)))
    assert not mr.is_ct


def test_multiframe_per_frame_rescale_and_positions(tmp_path):
    p = write_multiframe(tmp_path / "mf.dcm", n=5)
    vol = read_volume(p)
    np.testing.assert_array_equal(_hu_column(vol), -500.0 + 100.0 * np.arange(5))
    assert vol.spacing[2] == pytest.approx(2.0)
    other = write_multiframe(tmp_path / "b" / "mf2.dcm", n=3)  # a second class: one class is refused
    s = load_dataset("custom", _class_tree(tmp_path, {"a": [p], "b": [other]}), dicom_frames="volume",
                     slices="all", fractions=(1, 0, 0))
    assert sorted(x.index for x in s.train if x.classname == "a") == [0, 1, 2, 3, 4]
    assert len(s.train) == 8 and all(x.view for x in s.train)


def _class_tree(tmp_path, spec: dict) -> Path:
    import shutil

    root = tmp_path / "tree"
    for cls, files in spec.items():
        for f in files:
            (root / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / cls / Path(f).name)
    return root


# ----------------------------------------------------------------------------------- windows (table)
WINDOWS = {
    "lung": ("lung", -600.0, 0.5),
    "mediastinum": ("mediastinum", 50.0, 0.5),
    "bone": ("bone", 500.0, 0.5),
    "brain": ("brain", 40.0, 0.5),
    "abdomen": ("abdomen", -150.0, 0.0),
    "custom W/L": ("400/40", 140.0, 0.75),
    "below window": ("lung", -2000.0, 0.0),
    "above window": ("brain", 500.0, 1.0),
}


@pytest.mark.parametrize("case", list(WINDOWS), ids=list(WINDOWS))
def test_window_values_exact(tmp_path, case):
    spec, hu, expected = WINDOWS[case]
    write_series(tmp_path / "s", n=3, hu=lambda j, r, c: np.full((r, c), hu))
    x = load_volume_sample(tmp_path / "s", window=spec)
    assert x.shape == (3, 6, 7) and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.float32(expected))


def test_window_presets_are_the_documented_ones():
    assert WINDOW_PRESETS == {"lung": (1500, -600), "mediastinum": (350, 50), "bone": (2000, 500),
                              "brain": (80, 40), "abdomen": (400, 50)}
    assert apply_hu_window(np.array([-1350.0, 150.0]), 1500, -600).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("width,level", [(1500, -600), (350, 50), (80, 40), (400, 40), (3000, 0), (1, 0)])
def test_hu_window_values_at_1e6(width, level):
    """level - width/2 -> 0, level + width/2 -> 1, linear between, clipped: by the documented rule."""
    lo, hi = level - width / 2, level + width / 2
    hu = np.unique(np.concatenate([np.linspace(lo - width, hi + width, 301), [lo, hi, lo - 0.5, hi + 0.5, level]]))
    expected = [0.0 if h <= lo else 1.0 if h >= hi else (h - lo) / width for h in hu.tolist()]
    np.testing.assert_allclose(apply_hu_window(hu, width, level), expected, rtol=0, atol=1e-6)


def test_multi_window_channels_and_auto(tmp_path):
    write_series(tmp_path / "s", n=3, hu=lambda j, r, c: np.full((r, c), 50.0), window=(100.0, 0.0))
    x = load_volume_sample(tmp_path / "s", window="multi")  # lung, mediastinum, bone
    # HU 50 by hand: lung (50 + 1350) / 1500, mediastinum (50 + 125) / 350, bone (50 + 500) / 2000
    np.testing.assert_allclose(x[:, 0, 0], [1400 / 1500, 175 / 350, 550 / 2000], rtol=0, atol=1e-6)
    auto = load_volume_sample(tmp_path / "s")  # the series' own window W100/L0
    np.testing.assert_array_equal(auto[:, 0, 0], np.float32(1.0))
    with pytest.raises(DataError, match="both use the three colour channels"):
        load_volume_sample(tmp_path / "s", window="multi", slices="2.5d")


@pytest.mark.parametrize("spec", ["lungs", "multi:lung,bone", "0/40", "abc/def", "W400"])
def test_unknown_window_is_one_line_error(spec):
    with pytest.raises(DataError) as err:
        parse_window(spec)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------- slice policies
def test_slice_policies(tmp_path):
    write_series(tmp_path / "s", n=N, slope=1.0)
    hu = -500.0 + 100.0 * np.arange(N)
    win = "3000/0"  # linear over -1500..1500: value = (hu + 1500) / 3000

    def val(h):
        return np.float32((np.float32(h) + 1500) / 3000)

    mid = load_volume_sample(tmp_path / "s", window=win)
    assert mid[0, -1, -1] == val(hu[N // 2])
    allv = load_volume_sample(tmp_path / "s", slices="all", window=win)
    assert allv.shape == (N, 3, 6, 7) and np.array_equal(allv[:, 0, -1, -1], [val(h) for h in hu])
    two = load_volume_sample(tmp_path / "s", slices="slices:2", window=win)
    assert np.array_equal(two[:, 0, -1, -1], [val(hu[1]), val(hu[4])])  # floor((i + .5) * 6 / 2)
    mip = load_volume_sample(tmp_path / "s", slices="mip:6", window=win)  # 3 planes around the middle
    assert mip[0, -1, -1] == val(hu[N // 2 + 1])
    d25 = load_volume_sample(tmp_path / "s", slices="2.5d", window=win)
    assert d25[:, -1, -1].tolist() == [val(hu[2]), val(hu[3]), val(hu[4])]
    assert plane_indices(parse_slices("slices:10"), 4) == [0, 1, 2, 3]
    for bad in ("slices:0", "mip:-1", "some"):
        with pytest.raises(DataError, match="unknown slice policy"):
            parse_slices(bad)


# ----------------------------------------------------------------------------------- datasets
def test_hospital_tree_of_series_one_sample_per_series(tmp_path):
    root = tmp_path / "root"
    for cls in ("normal", "nodule"):
        for p in range(3):
            write_series(root / cls / f"patient{p}" / "ct", n=4, uid=f"1.2.{len(cls)}.{p}", seed=p)
    s = load_dataset("custom", root, seed=0)
    allx = s.train + s.val + s.test
    assert len(allx) == 6 and all(x.view == "middle|axial|auto" and x.index is None for x in allx)
    # the headers' PatientID (one per series folder here), as a salted pseudonym - never the ID itself
    assert len({x.patient_id for x in allx}) == 6 and all(x.patient_id.startswith("pt-") for x in allx)
    every = load_dataset("custom", root, slices="all", window="lung")
    assert len(every.train + every.val + every.test) == 24
    split_of = {}
    for split in ("train", "val", "test"):
        for x in every.split(split):
            assert split_of.setdefault((x.classname, x.patient_id), split) == split  # no patient leakage


def test_csv_rows_point_to_series_and_volumes(tmp_path):
    write_series(tmp_path / "a" / "s1", n=4, uid="1.1")
    write_series(tmp_path / "b" / "s2", n=4, uid="1.2")
    write_nifti(tmp_path / "c.nii.gz", np.full((4, 4, 3), -1000, np.int16))
    (tmp_path / "rows.csv").write_text("path,label,patient_id,split\na/s1,x,P1,train\nb/s2,y,P2,train\n"
                                       "c.nii.gz,y,P3,test\n")
    s = load_dataset("custom", tmp_path / "rows.csv")
    assert [x.patient_id for x in s.train] == ["P1", "P2"] and all(x.view for x in s.train + s.test)
    write_series(tmp_path / "a" / "s1", n=3, uid="9.9", prefix="other")  # now two series in a row's folder
    with pytest.raises(DataError, match=r"a/s1: holds 2 volumes"):
        load_dataset("custom", tmp_path / "rows.csv")


def test_symlinked_series_folders_are_followed_once_and_loops_end(tmp_path):
    """A linked series folder is refused, or with follow_symlinks a sample (it used to be skipped silently
    either way); a link back to an ancestor does not make the scan loop."""
    import os

    root = tmp_path / "root"
    for cls in ("x", "y"):
        for p in range(2):
            write_series(root / "store" / cls / f"p{p}", n=4, uid=f"{len(cls)}.{p}.{int(cls == 'x')}")
            (root / "tree" / cls / f"p{p}").mkdir(parents=True)
            os.symlink(root / "store" / cls / f"p{p}", root / "tree" / cls / f"p{p}" / "ct")
    os.symlink(root / "tree" / "x", root / "tree" / "x" / "p0" / "loop")  # a link to its own ancestor
    vols, _ = scan_folder(root / "tree" / "x")
    assert sorted(Path(v.path).parent.name for v in vols) == ["p0", "p1"]
    with pytest.raises(DataError, match=r"entry 'x/p0/ct' is a symlink .* --follow-symlinks"):
        load_dataset("custom", root / "tree")  # the store lies outside this data root
    s = load_dataset("custom", root / "tree", follow_symlinks=True)
    assert len(s.train + s.val + s.test) == 4


def test_split_file_records_volumes_and_policy(tmp_path):
    root = tmp_path / "root"
    for cls in ("x", "y"):
        for p in range(2):
            write_series(root / cls / f"p{p}", n=4, uid=f"{len(cls)}.{p}.{int(cls == 'x')}")
    sf = tmp_path / "split.json"
    a = load_dataset("custom", root, split_file=sf, slices="all")
    b = load_dataset("custom", root, split_file=sf, slices="all", window="bone")
    assert [(x.path, x.index) for x in a.train] == [(x.path, x.index) for x in b.train]
    assert all(x.view == "all|axial|bone" for x in b.train)
    with pytest.raises(DataError, match="was written with --slices all"):
        load_dataset("custom", root, split_file=sf)


def test_no_patient_tag_in_listing_or_errors(tmp_path, capsys):
    write_series(tmp_path / "c" / "p" / "s", n=4, skip=2)
    with pytest.raises(DataError) as err:
        load_dataset("custom", tmp_path)
    out = str(err.value) + capsys.readouterr().out + capsys.readouterr().err
    assert not any(n in out for n in PATIENT_NEEDLES)


# ----------------------------------------------------------------------------------- real data
real = pytest.mark.skipif(not SHARED_VOL.is_dir(), reason=f"real volumes not available at {SHARED_VOL}")


@real
def test_real_volumes_one_sample_per_series_and_nifti():
    s = load_dataset("custom", SHARED_VOL, verify="header")
    paths = sorted(Path(x.path).name for x in s.train + s.val + s.test)
    assert paths == sorted(["ct_abdomen_series_2", "ct_chest_series_1", "ct_headneck_series_3", "mr_brain_series_1",
                            "ct_abdomen_pelvis_totalsegmentator.nii.gz", "mr_abdomen_totalsegmentator_small.nii.gz",
                            "mr_brain_mni152_t1_nilearn.nii.gz"])


@real
@pytest.mark.parametrize("name,n,shape,spacing", [
    ("ct_chest_series_1", 48, (48, 512, 512), 2.0),
    ("ct_abdomen_series_2", 20, (20, 512, 512), 2.0),   # empty UIDs everywhere
    ("ct_headneck_series_3", 24, (24, 511, 511), 3.0),  # InstanceNumber 1 everywhere, 511x511
    ("mr_brain_series_1", 24, (24, 512, 512), 1.5),
])
def test_real_series_geometry(name, n, shape, spacing):
    vol = read_volume(SHARED_VOL / name)
    assert vol.array.shape == shape and vol.spacing[2] == pytest.approx(spacing, abs=1e-3)
    assert vol.is_ct == name.startswith("ct")
    if vol.is_ct:
        assert vol.array.min() == -1024.0
    # every slice of the ordered series steps +spacing along the normal: compare with pydicom's own positions
    import pydicom

    from medclipsvd.data.volumes.selection import resolve

    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in resolve(SHARED_VOL / name).files]
    assert np.allclose(np.diff(z), spacing, atol=1e-3)
