"""Hospital datasets: folders and CSVs, the patient-grouped seeded split, and its split file."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from data_synth import write_image
from medclipsvd.data import grouped_stratified_split, load_dataset
from medclipsvd.errors import DataError


def _patients_folder(root, classes=("normal", "pneumonia_severe"), patients=6, per_patient=3):
    n = 0
    for c in classes:
        for p in range(patients):
            for i in range(per_patient):
                write_image(root / c / f"{c[:2]}{p:02d}" / f"img{i}.png", seed=n)
                n += 1
    return root


def _split_of_patients(splits):
    where = defaultdict(set)
    for s in ("train", "val", "test"):
        for x in splits.split(s):
            where[x.patient_id].add(s)
    return where


def test_folder_with_patient_subfolders(tmp_path):
    s = load_dataset("custom", _patients_folder(tmp_path), seed=3)
    assert s.classnames == ["normal", "pneumonia severe"]  # folder names, underscores as spaces
    assert sum(s.counts().values()) == 36
    where = _split_of_patients(s)
    assert len(where) == 12 and all(len(v) == 1 for v in where.values())  # no patient in two splits
    for split in ("train", "val", "test"):  # stratified: both classes in every split
        assert set(x.label for x in s.split(split)) == {0, 1}
    assert s.counts() == {"train": 18, "val": 6, "test": 12}  # 3 / 1 / 2 patients per class (0.5 / 0.2 / 0.3)


def test_split_is_seeded_and_stable(tmp_path):
    root = _patients_folder(tmp_path)
    a, b = load_dataset("custom", root, seed=1), load_dataset("custom", root, seed=1)
    c = load_dataset("custom", root, seed=2)
    assert a.train == b.train and a.test == b.test
    assert {x.patient_id for x in a.test} != {x.patient_id for x in c.test}


def test_split_file_round_trip(tmp_path):
    root = _patients_folder(tmp_path / "data")
    sf = tmp_path / "split.json"
    first = load_dataset("custom", root, seed=5, split_file=sf)
    written = json.loads(sf.read_text())
    assert set(written) == {"train", "val", "test", "meta"}
    assert written["meta"]["classnames"] == ["normal", "pneumonia severe"] and written["meta"]["seed"] == 5
    rel, label, name, extra = written["train"][0]
    assert not rel.startswith("/") and name == first.classnames[label] and set(extra) == {"patient"}
    again = load_dataset("custom", root, seed=999, split_file=sf)  # the file wins over the seed
    assert [x.path for x in again.train] == [x.path for x in first.train]
    assert [x.label for x in again.test] == [x.label for x in first.test]


def test_split_file_keeps_patients_as_pseudonyms(tmp_path):
    """A run on a split file still counts K in patients (all of a patient's images), reports study metrics
    per patient and refuses a patient in two splits; the file holds pseudonyms p1, p2, ..., not patient ids."""
    from medclipsvd.data import sample_few_shot

    root = _patients_folder(tmp_path / "data")
    sf = tmp_path / "split.json"
    first = load_dataset("custom", root, seed=5, split_file=sf)
    text = sf.read_text()
    written = [it[3]["patient"] for s in ("train", "val", "test") for it in json.loads(text)[s]]
    assert len(written) == 36 and all(p[0] == "p" and p[1:].isdigit() for p in written)  # not no04, pn02, ...
    again = load_dataset("custom", root, split_file=sf)
    assert _split_of_patients(again).keys() == {f"p{i}" for i in range(1, 13)}
    # the same grouping, renamed: patient of each image in the first load <-> pseudonym in the second
    pairs = {(a.patient_id, b.patient_id) for s in ("train", "val", "test")
             for a, b in zip(first.split(s), again.split(s))}
    assert len(pairs) == 12 and len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 12
    assert len({x.study for x in again.test}) == 4  # study metrics average each patient's 3 images
    few = sample_few_shot(again, 1, seed=2)
    assert len({x.patient_id for x in few.train}) == 2 and len(few.train) == 6  # 1 patient x 3 images per class
    data = json.loads(text)
    data["test"].append(data["train"][0])  # an image of a train patient listed in test too
    sf.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"split\.json: 1 patient\(s\) appear in more than one split .*train and test"):
        load_dataset("custom", root, split_file=sf)


def test_train_test_folders_get_a_val_from_train(tmp_path):
    for split, n in (("train", 10), ("test", 4)):
        for c in ("cat_a", "cat_b"):
            for i in range(n):
                write_image(tmp_path / split / c / f"{i}.png", seed=i)
    s = load_dataset("custom", tmp_path)
    assert s.counts()["test"] == 8  # given test kept as is
    assert s.counts()["train"] + s.counts()["val"] == 20 and s.counts()["val"] > 0
    assert all("/test/" in x.path for x in s.test)


def _csv(tmp_path, header, rows):
    p = tmp_path / "export.csv"
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_csv_with_patients(tmp_path):
    rows = []
    for i in range(12):
        write_image(tmp_path / "img" / f"{i}.png", seed=i)
        rows.append(f"img/{i}.png,{'effusion' if i % 2 else 'normal'},P{i // 2}")
    s = load_dataset("custom", _csv(tmp_path, "path,label,patient_id", rows))
    assert s.classnames == ["effusion", "normal"]
    assert all(len(v) == 1 for v in _split_of_patients(s).values())


def test_csv_with_given_split(tmp_path):
    rows = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        write_image(tmp_path / f"{i}.png", seed=i)
        rows.append(f"{i}.png,{i % 2},,{split}")
    (tmp_path / "classnames.txt").write_text("healthy\ndisease\n")
    s = load_dataset("custom", _csv(tmp_path, "path,label,patient_id,split", rows))
    assert s.counts() == {"train": 2, "val": 1, "test": 1} and s.classnames == ["healthy", "disease"]
    assert s.test[0].classname == "disease"


def test_csv_unknown_column(tmp_path):
    p = _csv(tmp_path, "path,label,age", ["a.png,x,40"])
    with pytest.raises(DataError, match=r"export.csv: unknown column\(s\) \['age'\]\. Allowed: path,label\[,patient_id\]\[,split\]"):
        load_dataset("custom", p)


def test_csv_numeric_labels_need_classnames(tmp_path):
    p = _csv(tmp_path, "path,label", ["a.png,0"])
    with pytest.raises(DataError, match="labels are numbers; put the class names"):
        load_dataset("custom", p)


def test_csv_partial_split_column(tmp_path):
    p = _csv(tmp_path, "path,label,split", ["a.png,x,train", "b.png,y,"])
    with pytest.raises(DataError, match="split column is filled for some rows only"):
        load_dataset("custom", p)


def test_csv_patient_in_two_given_splits(tmp_path):
    for i in range(2):
        write_image(tmp_path / f"{i}.png", seed=i)
    p = _csv(tmp_path, "path,label,patient_id,split", ["0.png,x,P1,train", "1.png,x,P1,test"])
    with pytest.raises(DataError, match=r"1 patient id\(s\) appear in more than one split"):
        load_dataset("custom", p)


def test_csv_missing_file_is_counted(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", seed=1)
    p = _csv(tmp_path, "path,label,split", ["a.png,x,train", "b.png,y,train", "gone.png,x,test"])
    with pytest.raises(DataError, match=r"(?s)missing \(1\).*gone.png: file not found"):
        load_dataset("custom", p)
    assert load_dataset("custom", p, allow_missing=True).counts() == {"train": 2, "val": 0, "test": 0}


def test_nifti_all_slices_become_samples(tmp_path):
    import nibabel as nib

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        nib.save(nib.Nifti1Image(np.random.default_rng(0).random((4, 4, 5)).astype(np.float32), np.eye(4)),
                 str(tmp_path / c / "vol.nii.gz"))
    one = load_dataset("custom", tmp_path, fractions=(1, 0, 0))
    allsl = load_dataset("custom", tmp_path, fractions=(1, 0, 0), nifti_slices="all")
    assert len(one.train) == 2 and all(x.index is None for x in one.train)
    assert len(allsl.train) == 10 and sorted(x.index for x in allsl.train if "/a/" in x.path) == [0, 1, 2, 3, 4]


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no class folders found"):
        load_dataset("custom", tmp_path)


@pytest.mark.parametrize("n_groups", [3, 10, 57])
def test_grouped_split_properties(n_groups):
    rng = np.random.default_rng(n_groups)
    groups = [f"g{rng.integers(n_groups)}" for _ in range(300)]
    label_of = {g: int(g[1:]) % 3 for g in set(groups)}
    labels = [label_of[g] for g in groups]
    out = grouped_stratified_split(labels, groups, (0.5, 0.2, 0.3), seed=0)
    assert out == grouped_stratified_split(labels, groups, (0.5, 0.2, 0.3), seed=0)
    per_group = defaultdict(set)
    for g, s in zip(groups, out):
        per_group[g].add(s)
    assert all(len(v) == 1 for v in per_group.values())
    if n_groups >= 30:  # enough groups per class: each class reaches every split
        for lab in range(3):
            assert {s for s, l in zip(out, labels) if l == lab} == {"train", "val", "test"}
