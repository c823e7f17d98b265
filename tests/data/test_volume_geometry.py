"""Issue 18 items 4-5: geometry that is not one regular stack (variable spacing, gantry tilt, a series split
across folders, 4-D DCE/DWI series and 4-D NIfTI), DICOM without a preamble and damaged NIfTI - on
synthetic inputs written by pydicom / nibabel, with expected values computed here from the geometry."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
from volume_synth import AXIAL, PATIENT, PATIENT_NEEDLES, strip_preamble, write_nifti, write_series, write_slice

from medclipsvd.data import load_dataset
from medclipsvd.data.volumes.read import read_volume, volume_shape
from medclipsvd.data.volumes.selection import resolve, scan_folder
from medclipsvd.data.volumes.series import PHASE_SEP, SERIES_SEP
from medclipsvd.errors import DataError

ROWS, COLS = 8, 7


def _flat(value: float):
    return lambda j, r, c: np.full((r, c), value)


def _write_at(folder, zs, hu_of_z, *, uid="1.2.826.0.1.55.1", prefix="IMG", phi=None, shift=None):
    """One slice per z (mm along +z), constant HU ``hu_of_z(z)``; ``shift(j)``: in-plane origin offset."""
    out = []
    for j, z in enumerate(zs):
        dx, dy = shift(j) if shift else (0.0, 0.0)
        out.append(write_slice(folder / f"{prefix}{j:03d}.dcm", np.full((ROWS, COLS), hu_of_z(z)), (dx, dy, z),
                               uid=uid, phi=phi))
    return out


# ------------------------------------------------------------------------------------ variable spacing
def test_variable_spacing_is_resampled_to_the_smallest_step(tmp_path):
    zs = [0.0, 4.0, 8.0, 12.0, 19.0, 26.0, 33.0]  # 4 mm through the skull base, then 7 mm (a GE head CT)
    _write_at(tmp_path / "s", zs, lambda z: 10.0 * z - 500.0)
    vol = read_volume(tmp_path / "s")
    target = 4.0 * np.arange(9)  # 0..32 mm: floor(33 / 4) + 1 planes
    assert vol.array.shape == (9, ROWS, COLS) and vol.spacing[2] == pytest.approx(4.0)
    # HU linear in z: linear interpolation between the acquired planes gives it back exactly
    np.testing.assert_allclose(vol.array[:, 3, 3], 10.0 * target - 500.0, atol=1e-3)
    assert volume_shape(tmp_path / "s") == vol.array.shape  # known from the headers, before decoding


def test_regular_series_with_one_lost_slice_is_still_refused(tmp_path):
    zs = [0.0, 2.0, 4.0, 8.0, 10.0, 12.0]  # 2 mm steps and one 4 mm hole between two 2 mm steps
    _write_at(tmp_path / "s", zs, lambda z: z)
    with pytest.raises(DataError, match=r"missing slice\(s\) between IMG002.dcm and IMG003.dcm \(gap 4.00 mm"):
        read_volume(tmp_path / "s")


def test_a_stray_sliver_step_is_refused_not_blown_up(tmp_path):
    zs = [0.0, 5.0, 10.0, 10.2, 15.0, 20.0]
    _write_at(tmp_path / "s", zs, lambda z: z)
    with pytest.raises(DataError, match=r"slice spacing varies from 0.20 to 5.00 mm.*re-export") as err:
        read_volume(tmp_path / "s")
    assert "\n" not in str(err.value) and str(tmp_path / "s") in str(err.value)


# ------------------------------------------------------------------------------------------ gantry tilt
def test_gantry_tilt_is_resampled_onto_the_first_slice_grid(tmp_path):
    # each slice's origin moves 0.8 mm (one row) along the column direction: a point fixed in the patient
    # is one row higher in each next slice; corrected, it sits on the same row of every plane
    n, row_sp = 5, 0.8
    for j in range(n):
        hu = np.full((ROWS, COLS), -100.0)
        hu[6 - j, 3] = 1000.0
        write_slice(tmp_path / "s" / f"IMG{j:03d}.dcm", hu, (0.0, j * row_sp, 2.0 * j), spacing=(row_sp, row_sp))
    vol = read_volume(tmp_path / "s")
    assert vol.array.shape == (n, ROWS, COLS) and vol.spacing[2] == pytest.approx(2.0)
    np.testing.assert_array_equal(vol.array[:, 6, 3], np.full(n, 1000.0))
    assert (vol.array[:, :, 3] == 1000.0).sum() == n  # the point is nowhere else: no shear left
    # rows that enter the grid from outside the acquired field get the volume's minimum
    assert vol.array[n - 1, 0, 0] == -100.0


# ------------------------------------------------------------------------------- series split across folders
def test_series_split_across_folders_is_one_volume(tmp_path):
    root = tmp_path / "data"
    zs = [2.0 * j for j in range(6)]
    _write_at(root / "nodule" / "p1" / "part1", zs[:3], lambda z: z - 500.0, prefix="A")
    _write_at(root / "nodule" / "p1" / "part2", zs[3:], lambda z: z - 500.0, prefix="B")
    _write_at(root / "normal" / "p2" / "ct", zs, lambda z: z, uid="1.2.826.0.1.55.2",
              phi={**PATIENT, "PatientID": "B-2"})
    vols, flat = scan_folder(root / "nodule")
    assert len(vols) == 1 and flat == []
    assert vols[0].path.startswith(str(root / "nodule" / "p1") + SERIES_SEP) and vols[0].n_slices == 6
    vol = read_volume(vols[0].path)
    np.testing.assert_array_equal(vol.array[:, 0, 0], np.array(zs) - 500.0)
    assert resolve(root / "nodule" / "p1").path == vols[0].path  # the patient folder names it too
    splits = load_dataset("custom", root, slices="middle", fractions=(1.0, 0.0, 0.0))
    samples = splits.train + splits.val + splits.test
    assert sorted(s.classname for s in samples) == ["nodule", "normal"]  # one sample per series
    assert len({s.study for s in samples}) == 2  # two patients (from the headers' PatientID)
    assert [s.path for s in samples if s.classname == "nodule"] == [vols[0].path]


def test_one_uid_of_two_patients_is_not_merged(tmp_path):
    zs = [2.0 * j for j in range(3)]
    _write_at(tmp_path / "c" / "p1", zs, lambda z: z, phi={**PATIENT, "PatientID": "A-1"})
    _write_at(tmp_path / "c" / "p2", zs, lambda z: z, phi={**PATIENT, "PatientID": "B-2"})
    vols, _ = scan_folder(tmp_path / "c")
    assert sorted(v.path for v in vols) == [str(tmp_path / "c" / "p1"), str(tmp_path / "c" / "p2")]


def test_split_parts_holding_the_same_slice_name_both_files(tmp_path):
    zs = [2.0 * j for j in range(3)]
    _write_at(tmp_path / "c" / "p1" / "a", zs, lambda z: z)
    _write_at(tmp_path / "c" / "p1" / "b", zs, lambda z: z)  # the same series copied twice
    with pytest.raises(DataError, match=r"series split across 2 folders.*duplicated slice position") as err:
        read_volume(scan_folder(tmp_path / "c")[0][0].path)
    msg = str(err.value)
    assert str(tmp_path / "c" / "p1" / "a") in msg and str(tmp_path / "c" / "p1" / "b") in msg
    assert not any(n in msg for n in PATIENT_NEEDLES)


# ---------------------------------------------------------------------------------------- 4-D DICOM
@pytest.mark.parametrize("tag,values", [("TemporalPositionIdentifier", [10, 2, 1]),  # DCE: numeric order
                                        ("DiffusionBValue", [1000, 0, 500])],          # DWI b-values
                         ids=["DCE", "DWI"])
def test_4d_series_each_phase_is_a_sample(tmp_path, tag, values):
    d = tmp_path / "c" / "dce" / "p1" / "series"
    _write_at(tmp_path / "c" / "other" / "p2", [2.0 * j for j in range(4)], lambda z: z, uid="1.2.826.0.1.55.9",
              phi={**PATIENT, "PatientID": "B-2"})
    for t, v in enumerate(values):
        _write_at(d, [2.0 * j for j in range(4)], lambda z, v=v: float(v) + z, prefix=f"T{t}_",
                  phi={**PATIENT, tag: v})
    vols, _ = scan_folder(tmp_path / "c" / "dce")
    assert [v.path.rpartition(PHASE_SEP)[2] for v in vols] == ["0", "1", "2"]
    assert all(v.n_slices == 4 and v.phase == k for k, v in enumerate(vols))
    for k, v in enumerate(vols):  # phase k = the k-th smallest tag value, numerically
        np.testing.assert_array_equal(read_volume(v.path).array[:, 0, 0], sorted(values)[k] + 2.0 * np.arange(4))
    with pytest.raises(DataError, match=r"is 4-D \(3 phases/volumes.*pick one as .*@t0 \.\.\. .*@t2") as err:
        read_volume(d)  # a folder (a CSV row, a predict input) names no phase: which one?
    assert "\n" not in str(err.value)
    splits = load_dataset("custom", tmp_path / "c", slices="middle", fractions=(1.0, 0.0, 0.0))
    assert sorted(s.classname for s in splits.train + splits.val + splits.test) == ["dce"] * 3 + ["other"]


def test_repeated_positions_without_a_phase_tag_name_the_fix(tmp_path):
    d = tmp_path / "s"
    for t in range(2):
        _write_at(d, [2.0 * j for j in range(4)], lambda z: z, prefix=f"T{t}_")
    with pytest.raises(DataError, match=r"duplicated slice position .*TemporalPositionIdentifier or DiffusionBValue"):
        read_volume(d)


# ---------------------------------------------------------------------------------------- 4-D NIfTI
def test_4d_nifti_each_volume_is_a_sample(tmp_path):
    data = np.zeros((5, 6, 4, 3), dtype=np.int16)
    for t in range(3):
        data[..., t] = 100 * (t + 1)
    f = write_nifti(tmp_path / "c" / "dwi.nii.gz", data)
    vols, _ = scan_folder(tmp_path / "c")
    assert [v.path for v in vols] == [f"{f}{SERIES_SEP}{PHASE_SEP}{t}" for t in range(3)]
    for t, v in enumerate(vols):
        arr = read_volume(v.path).array
        assert arr.shape == (4, 6, 5) and np.all(arr == 100 * (t + 1))
    with pytest.raises(DataError, match=r"is 4-D \(3 phases/volumes"):
        read_volume(f)
    with pytest.raises(DataError, match=r"has no volume @t7"):
        read_volume(f"{f}{SERIES_SEP}{PHASE_SEP}7")


# ------------------------------------------------------------------------------------ DICOM without preamble


@pytest.mark.parametrize("keep_meta", [True, False], ids=["meta group, no preamble", "bare data set"])
def test_dicom_without_preamble_is_read(tmp_path, keep_meta):
    from medclipsvd.data.readers.dispatch import read_image
    from medclipsvd.data.readers.formats import file_kind

    zs = [2.0 * j for j in range(4)]
    files = [strip_preamble(f, keep_meta=keep_meta) for f in _write_at(tmp_path / "s", zs, lambda z: z - 500.0)]
    assert all(file_kind(f) == "dicom" for f in files)
    np.testing.assert_array_equal(read_volume(tmp_path / "s").array[:, 0, 0], np.array(zs) - 500.0)
    flat = write_slice(tmp_path / "flat" / "x.dcm", np.arange(ROWS * COLS, dtype=float).reshape(ROWS, COLS),
                       (0.0, 0.0, 0.0))
    img = read_image(str(strip_preamble(flat, keep_meta=keep_meta)))
    assert img.shape == (ROWS, COLS, 3) and img[0, 0, 0] == 0.0 and img[-1, -1, 0] == 1.0  # min..max window


def test_text_files_are_not_taken_for_raw_dicom(tmp_path):
    from medclipsvd.data.readers.formats import file_kind

    for name, data in (("README", b"# notes\n"), ("LICENSE", b"MIT License\n"), ("blob", b"\x08\x00\xff\xff" * 4)):
        (tmp_path / name).write_bytes(data)
        assert file_kind(tmp_path / name) != "dicom", name


# ------------------------------------------------------------------------------------------ damaged NIfTI
def _nifti_bytes(tmp_path, depth=20):
    f = write_nifti(tmp_path / "full.nii", (np.arange(8 * 9 * depth, dtype=np.int16) - 500).reshape(8, 9, depth))
    return f.read_bytes()


def _patched(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value):]


DAMAGED = {  # name -> (bytes of the file from the 20-slice int16 original, message)
    "truncated .nii": (lambda b: b[:352 + 8 * 9 * 10 * 2], r"truncated: the header promises 8x9x20 int16 voxels "
                                                           r"\(2,880 bytes\) but the file holds 1,440 \(about 10 of 20"),
    "truncated .nii.gz": (lambda b: gzip.compress(b[:352 + 8 * 9 * 10 * 2]), r"truncated: .* holds 1,440 \(about 10"),
    "cut gzip stream": (lambda b: gzip.compress(b)[:60], r"NIfTI file is truncated \(its gzip stream ends early"),
    "dim[0] = 9": (lambda b: _patched(b, 40, (9).to_bytes(2, "little")), r"malformed NIfTI header \(HeaderDataError"),
    "unknown datatype": (lambda b: _patched(b, 70, (9999).to_bytes(2, "little")), r"malformed NIfTI header .*9999"),
    "a zero dimension": (lambda b: _patched(b, 42, (0).to_bytes(2, "little")), r"dimensions 0x9x20"),
    "a negative dimension": (lambda b: _patched(b, 44, (-3).to_bytes(2, "little", signed=True)), r"dimensions 8x-3x20"),
    "NaN voxel size": (lambda b: _patched(b, 80, np.float32(np.nan).tobytes()), r"voxel sizes nan, 1, 2 mm"),
}


@pytest.mark.parametrize("case", list(DAMAGED), ids=list(DAMAGED))
def test_damaged_nifti_is_one_line_naming_the_file(tmp_path, case, capfd):
    make, pattern = DAMAGED[case]
    raw = _nifti_bytes(tmp_path)
    f = tmp_path / ("bad.nii.gz" if "gz" in case else "bad.nii")
    f.write_bytes(make(raw))
    for read in (read_volume, lambda p: __import__("medclipsvd.data.readers.nifti", fromlist=["x"]).read_nifti(str(p))):
        with pytest.raises(DataError, match=pattern) as err:
            read(f)
        assert str(err.value).startswith(f"{f}: ") and "\n" not in str(err.value)
    out, errs = capfd.readouterr()
    assert "ERROR" not in errs and "should be" not in errs  # ITK / nibabel said nothing on their own


def test_complete_nifti_files_pass_the_check(tmp_path):
    from medclipsvd.data.readers.nifti import check_nifti

    f = tmp_path / "ok.nii.gz"
    f.write_bytes(gzip.compress(_nifti_bytes(tmp_path)))
    assert check_nifti(str(f)) == (8, 9, 20) and read_volume(f).array.shape == (20, 9, 8)
    two = tmp_path / "two_members.nii.gz"  # concatenated gzip members: the footer is no guide, the stream is
    raw = _nifti_bytes(tmp_path)
    two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    np.testing.assert_array_equal(read_volume(two).array, read_volume(f).array)


def test_csv_rows_pick_a_phase_of_a_4d_series_or_nifti(tmp_path):
    root = tmp_path / "data"
    _write_at(root / "a", [2.0 * j for j in range(4)], lambda z: z, uid="1.2.826.0.1.56.1")
    for t in (1, 2, 3):
        _write_at(root / "dce", [2.0 * j for j in range(4)], lambda z, t=t: 100.0 * t + z, prefix=f"T{t}_",
                  uid="1.2.826.0.1.56.2", phi={**PATIENT, "TemporalPositionIdentifier": t})
    write_nifti(root / "dwi.nii.gz", np.zeros((5, 6, 4, 3), dtype=np.int16))
    key = scan_folder(root / "dce")[0][0].path.split(SERIES_SEP)[1].split(PHASE_SEP)[0]
    (root / "rows.csv").write_text(f"path,label,patient_id\na,normal,P1\ndce{SERIES_SEP}{key}{PHASE_SEP}2,nodule,P2\n"
                                   f"dwi.nii.gz{SERIES_SEP}{PHASE_SEP}1,nodule,P3\n")
    splits = load_dataset("custom", root / "rows.csv", fractions=(1.0, 0.0, 0.0), verify="decode")
    paths = sorted(os.path.relpath(s.path, root) for s in splits.train + splits.val + splits.test)
    assert paths == ["a", f"dce{SERIES_SEP}{key}{PHASE_SEP}2", f"dwi.nii.gz{SERIES_SEP}{PHASE_SEP}1"]
    dce = [s for s in splits.train + splits.val + splits.test if PHASE_SEP + "2" in s.path][0]
    np.testing.assert_array_equal(read_volume(dce.path).array[:, 0, 0], 300.0 + 2.0 * np.arange(4))  # t = 3


# ------------------------------------------------------------------------------------- --modality CT|MR
def test_modality_overrides_the_nifti_guess(tmp_path):
    from medclipsvd.data.volumes.policy import InputPolicy
    from medclipsvd.data.volumes.read import load_volume_sample

    data = np.full((6, 6, 4), 40.0, dtype=np.float32)  # soft tissue only, no air: guessed MR
    data[0, 0, :] = 0.0
    f = write_nifti(tmp_path / "n" / "ct_cropped.nii.gz", data)
    assert not read_volume(f).is_ct
    assert read_volume(f, modality="CT").is_ct and read_volume(f, modality="ct").modality == "CT"
    # the brain window (W80/L40) maps 40 HU to 0.5 exactly; percentile scaling would give 1.0
    x = load_volume_sample(f, window="brain", modality="CT")
    assert x[0, 3, 3] == pytest.approx(0.5, abs=1e-6)
    assert load_volume_sample(f, window="brain")[0, 3, 3] == pytest.approx(1.0, abs=1e-6)
    air = write_nifti(tmp_path / "n" / "mr_padded.nii.gz", np.full((6, 6, 4), -1000.0, dtype=np.float32))
    assert read_volume(air).is_ct and not read_volume(air, modality="MR").is_ct
    assert InputPolicy(modality="MR").view == "middle|axial|auto|MR" and InputPolicy().view == "middle|axial|auto"
    assert InputPolicy(modality="CT").to_dict()["modality"] == "CT" and "modality" not in InputPolicy().to_dict()
    with pytest.raises(DataError, match=r"modality must be CT or MR"):
        InputPolicy(modality="PET").validate()


def test_modality_reaches_dataset_samples(tmp_path):
    from medclipsvd.data.dataset import ImageDataset  # noqa: F401 - samples are read through their view

    root = tmp_path / "data"
    for cls in ("a", "b"):
        write_nifti(root / cls / "v.nii.gz", np.full((6, 6, 4), 40.0, dtype=np.float32))
    splits = load_dataset("custom", root, window="brain", modality="CT", fractions=(1.0, 0.0, 0.0))
    s = (splits.train + splits.val + splits.test)[0]
    assert s.view.endswith("|CT")
    from medclipsvd.data.volumes.views import read_view

    assert read_view(s.path, s.index, s.view)[3, 3, 0] == pytest.approx(0.5, abs=1e-6)


def test_volumes_are_listed_folder_by_folder_as_before(tmp_path):
    # the computed split is seeded over the listing order: a folder's series and NIfTI files come before
    # its sub-folders' (walk order), as before issue 18, so existing datasets split the same way
    c = tmp_path / "c"
    write_nifti(c / "z.nii.gz", np.zeros((4, 4, 3), dtype=np.int16))
    _write_at(c / "a-1", [0.0, 2.0], lambda z: z, uid="1.2.826.0.1.57.1")
    _write_at(c / "a", [0.0, 2.0], lambda z: z, uid="1.2.826.0.1.57.2")
    vols, _ = scan_folder(c)
    assert [os.path.relpath(v.path, c) for v in vols] == ["z.nii.gz", "a", "a-1"]


def test_a_damaged_nifti_in_a_class_folder_is_a_refused_row_not_the_end_of_the_scan(tmp_path):
    from medclipsvd.data.volumes.selection import survey

    root = tmp_path / "data"
    write_nifti(root / "a" / "ok.nii.gz", np.zeros((5, 6, 4), dtype=np.int16))
    write_nifti(root / "b" / "ok.nii.gz", np.zeros((5, 6, 4), dtype=np.int16))
    (root / "b" / "cut.nii").write_bytes(_nifti_bytes(tmp_path)[:352 + 100])
    fates = {os.path.basename(f.path): f for f in survey(root / "b").fates}
    assert fates["cut.nii"].fate == "refused" and "truncated" in fates["cut.nii"].reason
    assert fates["ok.nii.gz"].fate == "used"
    with pytest.raises(DataError, match=r"cut.nii: NIfTI voxel data is truncated.*--on-bad-series skip"):
        load_dataset("custom", root, fractions=(1.0, 0.0, 0.0))
    splits = load_dataset("custom", root, fractions=(1.0, 0.0, 0.0), on_bad_series="skip")
    assert sorted(s.classname for s in splits.train + splits.val + splits.test) == ["a", "b"]


def test_one_series_per_study_keeps_every_phase_of_the_chosen_4d_series(tmp_path):
    from medclipsvd.data.volumes.selection import SeriesFilter, survey

    study = {**PATIENT, "StudyInstanceUID": "1.2.826.0.1.58"}
    d = tmp_path / "c" / "p1"
    for t in (1, 2, 3):  # a DCE series of 3 phases of 6 slices
        _write_at(d / "dce", [2.0 * j for j in range(6)], lambda z: z, uid="1.2.826.0.1.58.1", prefix=f"T{t}_",
                  phi={**study, "TemporalPositionIdentifier": t})
    _write_at(d / "t2", [2.0 * j for j in range(4)], lambda z: z, uid="1.2.826.0.1.58.2", phi=study)  # 4 slices
    found = survey(tmp_path / "c", SeriesFilter(per_study="largest"))
    used = sorted(os.path.relpath(v.path, d) for v in found.volumes)
    assert len(used) == 3 and all(u.startswith("dce" + SERIES_SEP) for u in used)
    assert sorted(u.rpartition(PHASE_SEP)[2] for u in used) == ["0", "1", "2"]
    left = [f for f in found.fates if f.fate == "filtered"]
    assert [os.path.relpath(f.path, d) for f in left] == ["t2"] and "per_study=largest" in left[0].reason
