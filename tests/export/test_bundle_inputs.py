"""Issue 18 item 7: the MONAI bundle's `classify` reports each bad input on one line and still writes the
other inputs' predictions (a stand-in network and reader: what is tested is the per-input handling)."""
from __future__ import annotations

import json

import pytest
import torch

from medclipsvd.errors import DataError, MedClipSVDError
from medclipsvd.export import runtime

CLASSES = ["normal", "nodule"]


class _Net(torch.nn.Module):
    def forward(self, x):  # logits (0, log 3): probabilities 0.25 / 0.75 whatever the image
        return torch.tensor([[0.0, float(torch.log(torch.tensor(3.0)))]]).repeat(len(x), 1)


def _reader(bad: set[str]):
    def read(d):
        if d["image"] in bad:
            raise DataError(f"{d['image']}: missing slice(s) between A.dcm and C.dcm\n(gap 4.00 mm); restore them")
        return [{"image": torch.zeros(3, 4, 4), "view": 0}]
    return read


def _inputs(tmp_path):
    paths = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        paths.append(str(tmp_path / name))
    return paths + [str(tmp_path / "gone.nii.gz")]


@pytest.mark.parametrize("under_runner", [True, False])
def test_each_bad_input_is_one_line_and_the_others_are_written(tmp_path, capsys, monkeypatch, under_runner):
    monkeypatch.setattr(runtime, "_under_monai_runner", lambda: under_runner)
    a, b, c, gone = _inputs(tmp_path)
    expected = SystemExit if under_runner else MedClipSVDError
    with pytest.raises(expected) as exc:
        runtime.classify(_Net(), _reader({b}), [a, b, c, gone], str(tmp_path / "out"), CLASSES)
    if under_runner:
        assert exc.value.code == 2
    else:
        assert "2 of 4 input(s) could not be classified" in str(exc.value)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 2 and all(l.startswith("error: ") for l in lines)
    assert b in lines[0] and "missing slice(s)" in lines[0] and gone in lines[1] and "not found" in lines[1]
    preds = json.loads((tmp_path / "out" / runtime.PREDICTIONS_FILE).read_text())["predictions"]
    assert [p["input"] for p in preds] == [a, b, c, gone]
    for p in (preds[0], preds[2]):
        assert p["label"] == "nodule" and p["probabilities"]["nodule"] == pytest.approx(0.75, abs=1e-6)
    assert "error" in preds[1] and "error" in preds[3] and "label" not in preds[1]


def test_all_good_inputs_exit_normally(tmp_path):
    a, b, c, _ = _inputs(tmp_path)
    out = runtime.classify(_Net(), _reader(set()), [a, b, c], str(tmp_path / "out"), CLASSES)
    assert [p["label"] for p in out["predictions"]] == ["nodule"] * 3
