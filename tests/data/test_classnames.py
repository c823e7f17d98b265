"""Class names: one spelling per class (issue 16 item 8). Expected spellings are written out by hand."""
from __future__ import annotations

import pytest

from medclipsvd.data.classnames import clean, look_alike_letters, skeleton, why_alike
from medclipsvd.data.sanity import check_classnames
from medclipsvd.errors import DataError


@pytest.mark.parametrize("raw, expected", [
    ("benign\u200b", "benign"),                 # zero-width space
    ("\ufeffbenign", "benign"),                 # byte-order mark from an Excel export
    ("be\u200dnign", "benign"),                 # zero-width joiner inside
    ("\u202ebenign\u202c", "benign"),           # bidirectional override marks
    ("ｂｅｎｉｇｎ", "benign"),                  # full-width letters (NFKC)
    ("ﬁbrosis", "fibrosis"),                    # ligature (NFKC)
    ("  benign \t tumor ", "benign tumor"),     # whitespace runs
    ("bеnign", "bеnign"),                       # a Cyrillic е is a real letter: kept (flagged elsewhere)
])
def test_clean(raw, expected):
    assert clean(raw) == expected


@pytest.mark.parametrize("a, b", [
    ("benign", "benign\u200b"),
    ("benign", "b\u0435nign"),                  # Cyrillic е
    ("normal", "n\u03bfrmal"),                  # Greek ο
    ("COVID", "\u0421\u041eVID"),                # Cyrillic С, О upper case
    ("tumor", "tumör"),                         # accent
    ("Benign Tumor", "benign_tumor"),
    ("benign-tumor", "Benign  tumor"),
])
def test_look_alike_names_share_a_skeleton(a, b):
    assert skeleton(a) == skeleton(b)


@pytest.mark.parametrize("a, b", [("benign", "malignant"), ("normal", "abnormal"), ("mass", "masses"),
                                  ("grade 1", "grade 2")])
def test_different_names_keep_different_skeletons(a, b):
    assert skeleton(a) != skeleton(b)


def test_refusal_names_both_spellings_and_the_odd_characters():
    with pytest.raises(DataError) as exc:
        check_classnames(["benign", "benign\u200b", "malignant"], "data/")
    msg = str(exc.value)
    assert "'benign' and 'benign\\u200b'" in msg and "U+200B ZERO WIDTH SPACE" in msg and "rename one" in msg
    with pytest.raises(DataError) as exc:
        check_classnames(["b\u0435nign", "benign"], "x.csv")
    assert "look-alike letters" in str(exc.value) and "U+0435 CYRILLIC SMALL LETTER IE" in str(exc.value)
    with pytest.raises(DataError, match="differ only in case or spacing"):
        check_classnames(["Benign Tumor", "benign_tumor"], "x.csv")


def test_clean_names_are_returned_and_a_mixed_script_name_is_warned():
    assert check_classnames(["benign\u200b", "malignant"], "x.csv") == ["benign", "malignant"]
    with pytest.warns(UserWarning, match="U\\+0435 CYRILLIC SMALL LETTER IE"):
        assert check_classnames(["b\u0435nign", "malignant"], "x.csv") == ["b\u0435nign", "malignant"]
    assert look_alike_letters("норма") == []  # one script throughout: nothing to flag
    assert why_alike("a", "a\u200b").startswith("differ only by invisible")


def test_loaded_folder_classes_get_the_clean_spelling(tmp_path):
    """A folder named with a trailing zero-width space loads as the plain name, and its entries agree."""
    import numpy as np
    from PIL import Image

    from medclipsvd.data import load_dataset

    for c, name in enumerate(("benign\u200b", "malignant")):
        for i in range(4):
            p = tmp_path / name / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 40 * c + i, np.uint8)).save(p)
    splits = load_dataset("custom", tmp_path, fractions=(0.5, 0, 0.5))
    assert splits.classnames == ["benign", "malignant"]
    assert {s.classname for s in splits.train + splits.test} == {"benign", "malignant"}
