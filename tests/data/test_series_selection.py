"""Issue 18 items 1-3: what of a PACS-style study export becomes a sample (series selection), a fate for
every series (report all, then decide), and patients from the headers (salted pseudonyms).

Exports are written by pydicom (tests/data/export_synth.py); every expected count follows from what the
builder wrote (one CT series per study), not from the code under test."""
from __future__ import annotations

import json

import pytest

from export_synth import OBJECTS, retag, write_ct, write_localizer, write_object, write_secondary_capture, write_study
from volume_synth import write_series

from medclipsvd.data import load_dataset
from medclipsvd.errors import DataError

PATIENTS = {("normal", 0): "MRN-0001", ("normal", 1): "MRN-0002", ("nodule", 0): "MRN-0003",
            ("nodule", 1): "MRN-0004"}


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    monkeypatch.setenv("MEDCLIPSVD_PSEUDONYM_SALT", "test-salt")


def _export(root, extras=("rtstruct", "rtdose", "sr"), localizer=True):
    """2 classes x 2 patients, one study each (folder named by an accession number), one CT series per study."""
    for (cls, p), pid in PATIENTS.items():
        write_study(root / cls / f"ACC{len(cls)}{p}", patient_id=pid, study=f"1.2.826.0.1.{len(cls)}.{p}",
                    uid=f"1.2.826.0.2.{len(cls)}.{p}", extras=extras, localizer=localizer)
    return root


def _all(s):
    return s.train + s.val + s.test


def _fates(s, fate):
    return [f for f in s.report.series if f.fate == fate]


# ------------------------------------------------------------------------------------ item 1: selection
NOT_IMAGES = [(kind, OBJECTS[kind][1] or "directory") for kind in OBJECTS]


@pytest.mark.parametrize("kind,modality", NOT_IMAGES, ids=[k for k, _ in NOT_IMAGES])
def test_non_image_objects_beside_each_ct_series_never_become_samples(tmp_path, kind, modality):
    s = load_dataset("custom", _export(tmp_path / "d", extras=(kind,), localizer=False), seed=0)
    assert len(_all(s)) == 4  # one sample per CT series written
    assert all(x.path.endswith("/ct") for x in _all(s))
    listed = _fates(s, "not image")
    assert len(listed) == 4 and all(f.files == 1 for f in listed)


def _dicomdir_export(folder, pid, uid):
    """A media export: DICOMDIR + PT*/ST*/SE*/IM* files without extensions, written by pydicom's FileSet."""
    from pydicom.fileset import FileSet

    src = write_ct(folder.parent / (folder.name + "-src"), patient_id=pid, study=uid + ".0", uid=uid, n=5)
    retag(src, StudyDate="20200101", StudyTime="120000", StudyID="1", SeriesNumber="1")
    fs = FileSet()
    for f in src:
        fs.add(str(f))
    fs.write(str(folder))
    for f in src:
        f.unlink()
    src[0].parent.rmdir()


def test_dicomdir_export_reads_its_series_and_lists_the_index(tmp_path):
    root = tmp_path / "d"
    for i, cls in enumerate(("normal", "normal", "nodule", "nodule")):
        _dicomdir_export(root / cls / f"export{i}", f"MRN-9{i}", f"1.2.826.0.8.{i}")
    s = load_dataset("custom", root)
    assert len(_all(s)) == 4  # one series per export, found in the extension-less files
    index = _fates(s, "not image")
    assert len(index) == 4 and all(f.reason == "DICOMDIR index: 1 series, 5 file(s) referenced" for f in index)
    gone = next((root / "normal" / "export0").rglob("IM000004"))
    gone.unlink()  # an export copied without one of its files: the index says which
    s = load_dataset("custom", root, on_bad_series="skip")
    reasons = [f.reason for f in _fates(s, "not image") if "missing" in f.reason]
    assert len(reasons) == 1 and "1 missing (first: PT000000/ST000000/SE000000/IM000004)" in reasons[0]


def test_export_with_rt_objects_sr_and_localizer_gives_one_sample_per_ct_series(tmp_path):
    """The acceptance case: RT objects, an SR and a 3-plane localizer beside each CT series; no --allow-missing."""
    root = _export(tmp_path / "d", extras=("rtstruct", "rtdose", "rtplan", "seg", "sr"))
    s = load_dataset("custom", root, seed=0)
    assert sorted(x.path for x in _all(s)) == sorted(str(p / "ct") for p in root.glob("*/ACC*"))
    assert len(_fates(s, "not image")) == 4 * 5
    loc = _fates(s, "filtered")
    assert len(loc) == 4 and all(f.reason.startswith("localizer") for f in loc)
    assert s.report.complete


def test_localizer_secondary_capture_and_derived_are_left_out_by_default_and_kept_on_request(tmp_path):
    root = _export(tmp_path / "d", extras=(), localizer=False)
    write_localizer(root / "normal" / "ACC60" / "scout", patient_id="MRN-0001", study="1.2.826.0.1.6.0",
                    uid="1.2.826.0.3.1")
    write_secondary_capture(root / "normal" / "ACC60" / "sc.dcm", patient_id="MRN-0001", study="1.2.826.0.1.6.0")
    derived = write_ct(root / "nodule" / "ACC60" / "mpr", patient_id="MRN-0003", study="1.2.826.0.1.6.0",
                       uid="1.2.826.0.3.2", image_type=("DERIVED", "SECONDARY", "REFORMATTED"))
    s = load_dataset("custom", root)
    assert len(_all(s)) == 4
    reasons = sorted(f.reason.split(" ")[0] for f in _fates(s, "filtered"))
    assert reasons == ["derived", "localizer", "secondary"]
    kept = load_dataset("custom", root, series={"include": "derived,secondary"})
    paths = {x.path for x in _all(kept)}
    assert str(derived[0].parent) in paths and str(root / "normal" / "ACC60" / "sc.dcm") in paths
    assert len(_all(kept)) == 6


def test_secondary_captures_alone_stay_a_2d_dataset(tmp_path):
    """Exported screenshots with no series beside them are the dataset (the synthetic demo data is so)."""
    for cls in ("a", "b"):
        for i in range(3):
            write_secondary_capture(tmp_path / cls / f"{i}.dcm", patient_id=f"P{cls}{i}", study="1.2.3")
    s = load_dataset("custom", tmp_path)
    assert len(_all(s)) == 6 and not _fates(s, "filtered")


def _two_series_per_study(root):
    for cls, p, pid in (("a", 0, "P1"), ("a", 1, "P2"), ("b", 0, "P3"), ("b", 1, "P4")):
        study = f"1.2.826.0.4.{len(cls)}{p}"
        write_ct(root / cls / f"s{p}" / "thick", patient_id=pid, study=study, uid=study + ".1", n=4, step=5.0,
                 description="AXIAL 5MM")
        write_ct(root / cls / f"s{p}" / "thin", patient_id=pid, study=study, uid=study + ".2", n=6, step=1.0,
                 description="AXIAL 1MM")
        write_ct(root / cls / f"s{p}" / "mr", patient_id=pid, study=study, uid=study + ".3", n=8, step=2.0,
                 modality="MR", intercept=0.0, description="T1 SAG", image_type=("ORIGINAL", "PRIMARY", "M"))
    return root


FILTERS = [
    ({}, 12, None),
    ({"per_study": "thinnest"}, 4, "thin"),
    ({"per_study": "largest"}, 4, "mr"),
    ({"modality": "CT"}, 8, None),
    ({"modality": "CT", "per_study": "largest"}, 4, "thin"),
    ({"description": "axial*"}, 8, None),
    ({"description": "*5MM"}, 4, "thick"),
    ({"image_type": "AXIAL"}, 8, None),
    ({"thickness": "0.5-3"}, 8, None),
    ({"thickness": "4-"}, 4, "thick"),
    ({"min_slices": 7}, 4, "mr"),
    (["modality=CT", "thickness=-1.5"], 4, "thin"),
]


@pytest.mark.parametrize("spec,n,folder", FILTERS, ids=[str(f[0]) for f in FILTERS])
def test_series_filter(tmp_path, spec, n, folder):
    s = load_dataset("custom", _two_series_per_study(tmp_path / "d"), series=spec)
    got = _all(s)
    assert len(got) == n
    if folder is not None:
        assert {x.path.rsplit("/", 1)[1] for x in got} == {folder}
    assert len(_fates(s, "filtered")) == 12 - n  # every left-out series is listed, with its reason
    assert all(f.reason for f in _fates(s, "filtered"))


@pytest.mark.parametrize("spec,needle", [
    ({"per_study": "newest"}, "per_study='newest': use one of all, thinnest, largest"),
    ({"thickness": "3-1"}, "minimum is above the maximum"),
    ({"colour": "red"}, "unknown key(s) ['colour']"),
    (["modality"], "expected KEY=VALUE"),
    ({"include": "scouts"}, "include=scouts"),
    ({"min_slices": "many"}, "min_slices='many'"),
])
def test_bad_series_filters_are_one_clear_line(tmp_path, spec, needle):
    with pytest.raises(DataError) as exc:
        load_dataset("custom", _two_series_per_study(tmp_path / "d"), series=spec)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


# ------------------------------------------------------------------------------ item 2: report all
def _with_two_bad_series(root):
    _export(root, extras=(), localizer=False)
    write_series(root / "normal" / "ACC60" / "gap", n=6, skip=3, uid="1.2.826.0.9.1")
    bad = write_series(root / "nodule" / "ACC60" / "tilted", n=4, uid="1.2.826.0.9.2", names="ordered")
    retag(bad[:1], ImageOrientationPatient=["0", "1", "0", "0", "0", "-1"])
    return root


def test_every_bad_series_is_named_in_one_line_not_only_the_first(tmp_path):
    root = _with_two_bad_series(tmp_path / "d")
    with pytest.raises(DataError) as exc:
        load_dataset("custom", root)
    msg = str(exc.value)
    assert "2 series cannot be used" in msg and "\n" not in msg
    assert "ACC60/gap (CT, 5 files): missing slice(s)" in msg and "ACC60/tilted" in msg
    assert "inconsistent ImageOrientationPatient" in msg and "--on-bad-series skip" in msg


def test_on_bad_series_skip_leaves_them_out_and_lists_them(tmp_path):
    root = _with_two_bad_series(tmp_path / "d")
    s = load_dataset("custom", root, on_bad_series="skip")
    assert len(_all(s)) == 4
    refused = _fates(s, "refused")
    assert sorted(f.path.rsplit("/", 1)[1] for f in refused) == ["gap", "tilted"]
    assert any("2 series refused and left out" in n for n in s.report.notes)
    assert {f["fate"] for f in s.report.to_dict()["series"]} == {"used", "refused"}


def test_data_check_prints_the_series_table_then_one_error_line(tmp_path, capsys):
    from medclipsvd.cli.app import run

    root = _with_two_bad_series(tmp_path / "d")
    write_object(root / "normal" / "ACC50" / "rs.dcm", "rtstruct", patient_id="MRN-0001")
    code = run(["data", "check", "--dataset", "custom", "--data-root", str(root), "--verify", "header"])
    out = capsys.readouterr()
    assert code == 2
    table = out.out
    assert "series: 4 used, 1 not image, 2 refused" in table
    assert sum(1 for l in table.splitlines() if l.strip().startswith("used ")) == 4
    assert len([l for l in (out.out + out.err).splitlines() if l.startswith("error:")]) == 1
    assert "Traceback" not in out.out + out.err
    assert "MRN-000" not in out.out + out.err  # PatientIDs never in clear
    code = run(["data", "check", "--dataset", "custom", "--data-root", str(root), "--verify", "header",
                "--on-bad-series", "skip", "--series", "per_study=all"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "refused" in out and "RT Structure Set" in out and "missing slice(s)" in out


# --------------------------------------------------------------------------------- item 3: patients
def test_two_studies_of_one_patient_in_accession_folders_are_one_patient_in_one_split(tmp_path):
    root = tmp_path / "d"
    for cls in ("normal", "nodule"):
        for p in range(4):
            pid = f"MRN-{cls}-{p}"
            for acc in range(2):  # two studies of the same PatientID, folders named by accession number
                write_ct(root / cls / f"ACC{p}{acc}{len(cls)}", patient_id=pid, study=f"1.3.{len(cls)}.{p}.{acc}",
                         uid=f"1.4.{len(cls)}.{p}.{acc}")
    for seed in range(6):
        s = load_dataset("custom", root, seed=seed)
        where = {}
        for split in ("train", "val", "test"):
            for x in s.split(split):
                assert where.setdefault(x.patient_id, split) == split  # never one PatientID in two splits
        assert len(where) == 8 and all(p.startswith("pt-") for p in where)


def test_data_split_file_keeps_patients_grouped_and_holds_no_patient_id(tmp_path):
    from medclipsvd.cli.app import run

    root = _export(tmp_path / "d")
    for (cls, p), pid in PATIENTS.items():  # a second study of each patient, in another accession folder
        write_ct(root / cls / f"ACC9{len(cls)}{p}" / "ct", patient_id=pid, study=f"1.5.{len(cls)}.{p}",
                 uid=f"1.6.{len(cls)}.{p}")
    out = tmp_path / "split.json"
    assert run(["data", "split", "--data-root", str(root), "--output", str(out), "--seed", "3"]) == 0
    text = out.read_text()
    assert "MRN-" not in text
    split = json.loads(text)
    where = {}
    for name in ("train", "val", "test"):
        for entry in split[name]:
            assert where.setdefault(entry[3]["patient"], name) == name
    assert len(where) == 4  # 8 studies, 4 patients


def test_pseudonyms_are_salted_and_stable(tmp_path, monkeypatch):
    import hashlib
    import hmac

    from medclipsvd.data.pseudonyms import pseudonym

    expect = "pt-" + hmac.new(b"test-salt", b"patient\0MRN-0001", hashlib.sha256).hexdigest()[:12]
    assert pseudonym("MRN-0001") == expect
    monkeypatch.setenv("MEDCLIPSVD_PSEUDONYM_SALT", "other")
    assert pseudonym("MRN-0001") != expect and pseudonym("") == ""


def test_without_a_salt_variable_a_private_salt_file_is_made_once(tmp_path, monkeypatch):
    import stat

    from medclipsvd.data import pseudonyms

    monkeypatch.delenv("MEDCLIPSVD_PSEUDONYM_SALT")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    pseudonyms._salt.cache_clear()
    first = pseudonyms.pseudonym("MRN-0001")
    salt = tmp_path / "medclipsvd" / "pseudonym-salt"
    assert salt.is_file() and stat.S_IMODE(salt.stat().st_mode) == 0o600 and len(salt.read_bytes()) == 64
    pseudonyms._salt.cache_clear()  # a new process reads the same file: the same pseudonym
    assert pseudonyms.pseudonym("MRN-0001") == first and first.startswith("pt-")
    assert b"MRN-0001" not in salt.read_bytes()
    pseudonyms._salt.cache_clear()


def test_one_patient_under_two_labels_is_reported(tmp_path):
    root = _export(tmp_path / "d", extras=(), localizer=False)
    write_ct(root / "nodule" / "ACC77", patient_id="MRN-0001", study="1.7.1", uid="1.7.2")  # MRN-0001 is normal
    s = load_dataset("custom", root)
    note = [n for n in s.report.notes if "under two or more labels" in n]
    assert len(note) == 1 and "(nodule / normal)" in note[0] and "MRN" not in note[0]
    pid = next(x.patient_id for x in _all(s) if x.path.endswith("ACC77"))
    assert len({sp for sp in ("train", "val", "test") for x in s.split(sp) if x.patient_id == pid}) == 1


def test_folder_name_ids_under_two_labels_are_reported_and_counted_per_class(tmp_path):
    from medclipsvd.data.fewshot import sample_few_shot

    for cls in ("normal", "nodule"):
        for p in range(3):  # no PatientID in the headers: folder names are the ids, case0 under both labels
            write_series(tmp_path / cls / f"case{p}" / "ct", n=4, uid=f"1.8.{len(cls)}.{p}",
                         phi={"PatientName": "X"})
    s = load_dataset("custom", tmp_path, fractions=(0.7, 0.0, 0.3), seed=1)
    assert any("3 patient id(s) under two or more labels" in n for n in s.report.notes)
    few = sample_few_shot(s, 1, seed=0)
    assert few.meta["few_shot"]["patients"]["train"] == len({(x.label, x.patient_id) for x in few.train}) == 2


def test_csv_patient_id_column_overrides_the_headers(tmp_path):
    write_ct(tmp_path / "a", patient_id="MRN-1", study="1.9.1", uid="1.9.1.1")
    write_ct(tmp_path / "b", patient_id="MRN-1", study="1.9.2", uid="1.9.2.1")
    write_ct(tmp_path / "c", patient_id="MRN-2", study="1.9.3", uid="1.9.3.1")
    (tmp_path / "rows.csv").write_text("path,label,patient_id,split\na,x,P1,train\nb,y,P2,train\nc,y,,test\n")
    s = load_dataset("custom", tmp_path / "rows.csv")
    assert [x.patient_id for x in s.train] == ["P1", "P2"]
    assert s.test[0].patient_id.startswith("pt-")  # empty column: the header's PatientID, pseudonymised
