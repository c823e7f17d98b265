import pytest

from medclipsvd.errors import DataError
from medclipsvd.interpret.descriptions import default_pool_for, load_descriptions


@pytest.mark.parametrize("pool", ["general", "biomedical"])
def test_shipped_pools_are_large_distinct_and_short(pool):
    items = load_descriptions(pool)
    assert len(items) >= 300
    assert len({s.casefold() for s in items}) == len(items)
    assert all(1 <= len(s.split()) <= 10 for s in items), [s for s in items if len(s.split()) > 10]
    assert not any(s.startswith("#") for s in items)


@pytest.mark.parametrize("words", [
    # the biomedical pool must cover each benchmark modality
    ["MRI"], ["ultrasound"], ["radiograph", "X-ray"], ["CT"], ["endoscopy", "colonoscopy"],
    ["OCT"], ["fundus"], ["histology", "H&E"], ["polyp"], ["osteophytes"], ["drusen"],
    ["artefact"], ["consolidation"], ["glioma"], ["stone", "calculus"], ["adenocarcinoma"],
])
def test_biomedical_pool_covers_modalities(words):
    items = load_descriptions("biomedical")
    assert any(any(w.lower() in s.lower() for w in words) for s in items), words


def test_pools_do_not_overlap_much():
    general = {s.casefold() for s in load_descriptions("general")}
    bio = {s.casefold() for s in load_descriptions("biomedical")}
    assert len(general & bio) < 10


def test_user_pool_file(tmp_path):
    f = tmp_path / "pool.txt"
    f.write_text("# mine\nA cyst\n\na cyst\nA stone\n", encoding="utf-8")
    assert load_descriptions(f) == ["A cyst", "A stone"]


@pytest.mark.parametrize("content,match", [
    (None, "neither a shipped pool"),
    ("only one\n", "holds 1 description"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
])
def test_bad_pool_files(tmp_path, content, match):
    f = tmp_path / "p.txt"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(DataError, match=match):
        load_descriptions(f)


def test_default_pool():
    assert default_pool_for("tiny-biomedclip") == "biomedical"
    assert default_pool_for("clip-vit-b16") == "general"
