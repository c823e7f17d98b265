"""`predict --threshold`: a two-class model's label at an operating point (second class when its probability
is >= the threshold), the same rule as the operating points in results.json; and the file column of the
table at 80 columns."""
from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from medclipsvd.cli.app import run


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    from PIL import Image

    tmp = tmp_path_factory.mktemp("thr")
    root = tmp / "data"
    for c, cls in enumerate(("benign", "malignant")):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            rng = np.random.default_rng(10 * c + i)
            Image.fromarray((rng.random((32, 32)) * 255 * (0.5 + c / 2)).astype(np.uint8)).save(root / cls / f"{i}.png")
    out = tmp / "run"
    code = run(["train", "--pipeline", "custom", "--data-root", str(root), "--backbone", "tiny-biomedclip",
                "--random-init", "--shots", "1", "--max-steps", "1", "--no-mlflow", "--output", str(out)])
    assert code == 0
    return tmp, root, out / "adapter"


def _predict(tmp, root, adapter, name, *extra) -> list[dict]:
    csv_path = tmp / f"{name}.csv"
    files = [str(root / cls / f"{i}.png") for cls in ("benign", "malignant") for i in range(3)]
    assert run(["predict", "--adapter", str(adapter), *files, "--output", str(csv_path), *extra]) == 0
    return list(csv.DictReader(csv_path.open()))


def test_threshold_relabels_by_the_positive_class_probability(binary_run, capsys):
    tmp, root, adapter = binary_run
    plain = _predict(tmp, root, adapter, "plain")
    p_pos = np.array([float(r["prob_malignant"]) for r in plain])
    t = float(np.median(p_pos))  # a threshold that splits these images, unlike the argmax at 0.5 maybe
    rows = _predict(tmp, root, adapter, "median", "--threshold", str(t))
    expected = ["malignant" if p >= t else "benign" for p in p_pos]
    assert [r["label"] for r in rows] == expected
    assert [float(r["score"]) for r in rows] == pytest.approx([p if p >= t else 1 - p for p in p_pos], abs=1e-6)
    assert {r["label"] for r in _predict(tmp, root, adapter, "zero", "--threshold", "0")} == {"malignant"}
    # the probabilities are those of the model, whatever the threshold
    assert [r["prob_malignant"] for r in rows] == [r["prob_malignant"] for r in plain]


def test_threshold_out_of_range_is_refused_before_any_work(binary_run, capsys):
    tmp, root, adapter = binary_run
    capsys.readouterr()
    assert run(["predict", "--adapter", str(tmp / "no-such-adapter"), str(root / "benign" / "0.png"),
                "--threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--threshold must be a probability between 0 and 1" in err and "Traceback" not in err


def test_threshold_is_refused_for_more_than_two_classes():
    from medclipsvd.errors import MedClipSVDError
    from medclipsvd.serving.predictor import apply_threshold

    frame = pd.DataFrame({"label": ["a"], "label_index": [0], "score": [0.5], "prob_a": [0.5], "prob_b": [0.3],
                          "prob_c": [0.2]})
    with pytest.raises(MedClipSVDError, match="two-class models; this one has 3 classes"):
        apply_threshold(frame, 0.4)


def test_file_column_shows_paths_below_the_shared_folder_when_names_repeat():
    from medclipsvd.cli.tracking import _short_names

    root = "/very/long/hospital/export/folder/of/the/study/2026"
    assert _short_names([f"{root}/benign/0.png", f"{root}/malignant/1.png"]) == ["0.png", "1.png"]
    assert _short_names([f"{root}/benign/0.png", f"{root}/malignant/0.png"]) == ["benign/0.png", "malignant/0.png"]
    assert _short_names([f"{root}/a/s1/", f"{root}/b/s1/"]) == ["a/s1", "b/s1"]
