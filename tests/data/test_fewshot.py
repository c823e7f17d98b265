"""Few-shot sampling and base/new splits."""
from __future__ import annotations

import random
import warnings
from collections import Counter, defaultdict

import pytest

from medclipsvd.data import DatasetSplits, Sample, dataset_info, sample_few_shot, split_base_new
from medclipsvd.errors import DataError


def _splits(n_per_class=(20, 9, 3), n_val=6) -> DatasetSplits:
    names = [f"c{i}" for i in range(len(n_per_class))]
    # interleaved listing order, as split files are: class order of first appearance is 1, 0, 2
    train, val = [], []
    order = [1, 0, 2]
    for i in range(max(n_per_class)):
        for c in order:
            if i < n_per_class[c]:
                train.append(Sample(f"train/{names[c]}/{i:03d}.png", c, names[c]))
            if i < n_val:
                val.append(Sample(f"val/{names[c]}/{i:03d}.png", c, names[c]))
    test = [Sample(f"test/{i}.png", i % 3, names[i % 3]) for i in range(30)]
    return DatasetSplits("toy", names, train, val, test, dataset_info("BUSI"))


def _reference(splits: DatasetSplits, k: int, seed: int):
    """What the reference does: seed the global RNG, then val (min(K,4)) and train (K) per class."""
    random.seed(seed)
    out = {}
    for split, n in (("val", min(k, 4)), ("train", k)):
        tracker = defaultdict(list)
        for s in splits.split(split):
            tracker[s.label].append(s)
        chosen = []
        for _, items in tracker.items():
            chosen += random.sample(items, n) if len(items) >= n else random.choices(items, k=n)
        out[split] = chosen
    return out


@pytest.mark.parametrize("k,seed", [(1, 1), (2, 2), (4, 3), (16, 1)])
def test_reference_order_matches_the_reference_sequence(k, seed):
    s = _splits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        few = sample_few_shot(s, k, seed)
        ref = _reference(s, k, seed)
    assert few.train == ref["train"] and few.val == ref["val"]
    assert few.test == s.test  # untouched


def test_counts_per_class():
    few = sample_few_shot(_splits(), 2, seed=1)
    assert Counter(x.label for x in few.train) == {0: 2, 1: 2, 2: 2}
    assert Counter(x.label for x in few.val) == {0: 2, 1: 2, 2: 2}
    few8 = sample_few_shot(_splits(n_per_class=(20, 9, 8)), 8, seed=1)
    assert Counter(x.label for x in few8.val) == {0: 4, 1: 4, 2: 4}  # min(K, 4)


# Frozen draws: if these change, few-shot sets (and every published number made with them) change.
# Recorded once (CPython 3.11, NumPy 2.4); Mersenne Twister / PCG64 streams are platform-independent.
GOLDEN = {
    True: ["train/c1/001.png", "train/c1/005.png", "train/c0/018.png", "train/c0/001.png", "train/c2/002.png",
           "train/c2/000.png"],
    False: ["train/c1/005.png", "train/c1/007.png", "train/c0/017.png", "train/c0/012.png", "train/c2/001.png",
            "train/c2/000.png"],
}


@pytest.mark.parametrize("reference_order", [True, False])
def test_same_items_every_run(reference_order):
    a = sample_few_shot(_splits(), 2, seed=7, reference_order=reference_order)
    b = sample_few_shot(_splits(), 2, seed=7, reference_order=reference_order)
    c = sample_few_shot(_splits(), 2, seed=8, reference_order=reference_order)
    assert a.train == b.train and a.val == b.val
    assert a.train != c.train


@pytest.mark.parametrize("reference_order", [True, False])
def test_golden_draw(reference_order):
    got = [x.path for x in sample_few_shot(_splits(), 2, seed=7, reference_order=reference_order).train]
    assert got == GOLDEN[reference_order]


def test_independent_mode_is_order_free():
    s = _splits()
    shuffled = s.replace(train=list(reversed(s.train)))
    a = sample_few_shot(s, 2, seed=3, reference_order=False)
    b = sample_few_shot(shuffled, 2, seed=3, reference_order=False)
    assert sorted(x.path for x in a.train) == sorted(x.path for x in b.train)


def test_k_larger_than_class_samples_with_replacement_and_warns():
    with pytest.warns(UserWarning, match="class 2 has 3 train items, fewer than K=5; sampling with replacement"):
        few = sample_few_shot(_splits(), 5, seed=1)
    c2 = [x for x in few.train if x.label == 2]
    assert len(c2) == 5 and len({x.path for x in c2}) <= 3


@pytest.mark.parametrize("C,base", [(2, 1), (3, 2), (4, 2), (5, 3), (8, 4), (37, 19), (397, 199), (1000, 500)])
def test_base_new_sizes(C, base):
    names = [f"k{i}" for i in range(C)]
    test = [Sample(f"{i}.png", i, names[i]) for i in range(C)]
    s = DatasetSplits("t", names, [], [], test, dataset_info("BUSI"))
    b, n = split_base_new(s, "base"), split_base_new(s, "new")
    assert b.classnames == names[:base] and n.classnames == names[base:]
    assert [x.label for x in n.test] == list(range(C - base))  # relabelled 0..m-1
    assert all(n.classnames[x.label] == x.classname for x in n.test)
    assert split_base_new(s, "all") is s


def test_class_without_items_warns():
    s = _splits()
    s = s.replace(train=[x for x in s.train if x.label != 2])
    with pytest.warns(UserWarning, match=r"no train items for class\(es\) \['c2'\]"):
        few = sample_few_shot(s, 1, seed=0)
    assert {x.label for x in few.train} == {0, 1}


# --- patient-level sampling (hospital data): the default whenever samples carry patient ids -------------------

def _patient_splits(patients=((6, 5, 3), (3, 4, 2)), images_per_patient=2) -> DatasetSplits:
    """Patients p<class><nn> with two images each, listed interleaved across classes (class 2 first)."""
    names = ["benign", "malignant", "normal"]
    out = {}
    for split, counts in zip(("train", "val"), patients):
        items = []
        for i in range(max(counts)):
            for c in (2, 0, 1):
                if i < counts[c]:
                    pid = f"{split[:2]}-{c}{i:02d}"
                    items += [Sample(f"{split}/{names[c]}/{pid}/{j}.png", c, names[c], patient_id=pid)
                              for j in range(images_per_patient)]
        out[split] = items
    test = [Sample(f"test/{i}.png", i % 3, names[i % 3], patient_id=f"te-{i}") for i in range(6)]
    return DatasetSplits("hospital", names, out["train"], out["val"], test, dataset_info("BUSI"))


def _documented_patient_draw(splits: DatasetSplits, k: int, seed: int) -> dict[str, list[Sample]]:
    """The rule sample_few_shot documents for patient-level data, written out: one random.Random(seed) stream;
    val (min(K, 4) patients per class) before train (K); classes in label order; each class's patient ids
    sorted and drawn with Random.sample (all of them, no draw, when the class has fewer); every image of a
    drawn patient, in listing order."""
    rng = random.Random(seed)
    out = {}
    for split, n in (("val", min(k, 4)), ("train", k)):
        chosen = []
        for label in sorted({s.label for s in splits.split(split)}):
            patients = sorted({s.patient_id for s in splits.split(split) if s.label == label})
            picked = patients if len(patients) < n else rng.sample(patients, n)
            for pid in picked:
                chosen += [s for s in splits.split(split) if s.patient_id == pid]
        out[split] = chosen
    return out


# Drawn once (seed 7, K=2) and checked by hand against the rule: per class, K distinct patients of that class
# and split (val: min(K, 4) = 2; class 2 has exactly 2 val patients, so both, in drawn order), both images of
# each. Random.sample over a sorted list is the same on every platform for a given CPython.
PATIENT_GOLDEN = {
    "train": ["tr-004", "tr-000", "tr-102", "tr-100", "tr-202", "tr-200"],
    "val": ["va-001", "va-000", "va-103", "va-102", "va-200", "va-201"],
}


def test_patient_level_golden_draw():
    few = sample_few_shot(_patient_splits(), 2, seed=7)
    for split in ("train", "val"):
        got = getattr(few, split)
        assert [s.patient_id for s in got[::2]] == PATIENT_GOLDEN[split]
        assert [s.patient_id for s in got[1::2]] == PATIENT_GOLDEN[split]  # both images of each patient
    assert few.meta["few_shot"] == {"k": 2, "seed": 7, "unit": "patient", "patients": {"val": 6, "train": 6}}


@pytest.mark.parametrize("k", [1, 2, 4, 5])
@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_patient_level_draw_follows_the_documented_rule(k, seed):
    splits = _patient_splits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # K=4, 5: classes with fewer train patients than K
        few = sample_few_shot(splits, k, seed)
    expected = _documented_patient_draw(splits, k, seed)
    assert few.train == expected["train"] and few.val == expected["val"]
    assert few.test == splits.test


def test_patient_level_draw_depends_on_the_seed():
    splits = _patient_splits()
    draws = {seed: tuple(s.patient_id for s in sample_few_shot(splits, 2, seed).train) for seed in range(10)}
    assert draws[3] == tuple(s.patient_id for s in sample_few_shot(splits, 2, 3).train)  # same seed, same draw
    # 30 x 20 x 6 possible ordered train draws: ten seeds giving fewer than 8 different ones means a broken seed
    assert len(set(draws.values())) >= 8, draws


def test_patient_level_class_below_k_uses_every_patient_and_warns():
    with pytest.warns(UserWarning, match="class 2 has 3 train patient"):
        few = sample_few_shot(_patient_splits(), 4, seed=1)
    assert sorted({s.patient_id for s in few.train if s.label == 2}) == ["tr-200", "tr-201", "tr-202"]
    assert Counter(s.label for s in few.train) == {0: 8, 1: 8, 2: 6}  # 4, 4 and 3 patients x 2 images


# --- what mutation testing of fewshot.py asked for (docs/mutation.md) ------------------------------------------

def test_k_equal_to_a_class_size_samples_without_replacement_and_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither "fewer than K" nor "no items for class" may be raised
        few = sample_few_shot(_splits(), 3, seed=4)  # class 2 has exactly 3 train items
        few_independent = sample_few_shot(_splits(), 3, seed=4, reference_order=False)
    for f in (few, few_independent):
        c2 = sorted(x.path for x in f.train if x.label == 2)
        assert c2 == ["train/c2/000.png", "train/c2/001.png", "train/c2/002.png"]


def test_independent_mode_samples_with_replacement_below_k():
    with pytest.warns(UserWarning, match="class 2 has 3 train items, fewer than K=5"):
        few = sample_few_shot(_splits(), 5, seed=1, reference_order=False)
    c2 = [x.path for x in few.train if x.label == 2]
    assert len(c2) == 5 and len(set(c2)) <= 3


def _three_warnings() -> list[tuple]:
    """(warning, line of the sample_few_shot call) for the three warnings sample_few_shot can give."""
    import sys

    s = _splits()
    out = []
    with pytest.warns(UserWarning) as rec:
        sample_few_shot(s, 5, seed=1); line = sys._getframe().f_lineno  # noqa: E702
    out.append((rec[0], line))
    with pytest.warns(UserWarning) as rec:
        sample_few_shot(s.replace(train=[x for x in s.train if x.label != 2]), 1, seed=0); line = sys._getframe().f_lineno  # noqa: E702,E501
    out.append((rec[0], line))
    with pytest.warns(UserWarning) as rec:
        sample_few_shot(_patient_splits(), 4, seed=1); line = sys._getframe().f_lineno  # noqa: E702
    out.append((rec[0], line))
    return out


def test_warnings_name_the_dataset():
    (few_items, _), (absent, _), (few_patients, _) = _three_warnings()
    assert str(few_items.message).startswith("toy: class 2 has 3 train items, fewer than K=5; sampling with replacement")
    assert str(absent.message).startswith("toy: no train items for class(es) ['c2']")
    assert str(few_patients.message) == "hospital: class 2 has 3 train patient(s), fewer than K=4; all of them are used."


def test_warnings_point_at_the_callers_line():
    # (mutmut's trampolines add stack frames: tools/mutation.py deselects this test)
    assert [(w.filename, w.lineno) for w, _ in _three_warnings()] == [(__file__, line) for _, line in _three_warnings()]


def test_independent_mode_orders_items_of_one_file_by_index():
    """Rows of one npz file (same path, index 0..n) are drawn from the sorted order, not the listing order."""
    names = ["a", "b"]
    rows = [Sample("x.npz::train_images", i % 2, names[i % 2], index=i) for i in range(40)]
    s = DatasetSplits("npz", names, rows, [], [], dataset_info("BUSI"))
    a = sample_few_shot(s, 3, seed=5, reference_order=False)
    b = sample_few_shot(s.replace(train=list(reversed(rows))), 3, seed=5, reference_order=False)
    assert sorted(x.index for x in a.train) == sorted(x.index for x in b.train)  # classes come in listing order


def test_meta_records_the_draw_and_keeps_what_was_there():
    s = _splits()
    s.meta = {"split_file": "x.json"}
    few = sample_few_shot(s, 2, seed=7, reference_order=False)
    assert few.meta == {"split_file": "x.json", "few_shot": {"k": 2, "seed": 7, "reference_order": False}}
    assert sample_few_shot(s, 1, seed=3).meta["few_shot"] == {"k": 1, "seed": 3, "reference_order": True}


@pytest.mark.parametrize("k", [0, -2])
def test_k_below_one_is_refused(k):
    with pytest.raises(DataError) as err:
        sample_few_shot(_splits(), k, seed=1)
    assert str(err.value) == f"few-shot K must be >= 1, got {k}"


def test_base_new_relabels_every_split_and_records_the_map():
    s = _splits()
    s.meta = {"seed": 1}
    new = split_base_new(s, "new")  # 3 classes: base = [0, 1], new = [2] -> label 0
    assert new.classnames == ["c2"]
    for split in ("train", "val", "test"):
        want = [x.path for x in s.split(split) if x.label == 2]
        assert [x.path for x in new.split(split)] == want and {x.label for x in new.split(split)} == {0}
    assert new.meta == {"seed": 1, "subset": "new", "label_map": {0: 2}}
    base = split_base_new(s, "base")
    assert [x.path for x in base.train] == [x.path for x in s.train if x.label in (0, 1)]
    assert [x.path for x in base.val] == [x.path for x in s.val if x.label in (0, 1)]
    assert base.meta["label_map"] == {0: 0, 1: 1} and base.meta["subset"] == "base"
    with pytest.raises(DataError) as err:
        split_base_new(s, "old")
    assert str(err.value) == "subset (--subsample) must be 'base', 'new' or 'all', not 'old'"
