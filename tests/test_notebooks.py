"""The notebooks in docs/notebooks run as users run them (nbclient, a fresh kernel) and are stored with
their outputs, so that they read on the web without running: quickstart.ipynb on the real BUSI images,
hospital_ct.ipynb on the real DICOM series / NIfTI volumes and a hospital tree it builds from them. Both find
their data the same way: DATA_ROOT = $MEDCLIPSVD_DATA_ROOT, else ../shared/data beside the repository (the
folder holding biomedical/ and volumes/). The runs skip without the data.

To refresh the stored outputs after changing a notebook, execute it in place from docs/notebooks, e.g.
`MEDCLIPSVD_DATA_ROOT=../shared/data jupyter nbconvert --to notebook --execute --inplace docs/notebooks/*.ipynb`
(or nbclient, as `_execute` below)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_stored_with_the_outputs_of_one_clean_run(path):
    """Every code cell ran, top to bottom in one kernel (execution counts 1..n), without an error, and the
    stored outputs show no patient tag."""
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c["outputs"]]
    assert outputs and not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figures read without running
    text = json.dumps(outputs)
    assert not [v for v in PATIENT_TAG_VALUES if v in text]


DATA_ROOT_LINE = re.compile(r'^DATA_ROOT = Path\(os\.environ\.get\("MEDCLIPSVD_DATA_ROOT", "([^"]+)"\)\)\.resolve\(\)$',
                            re.MULTILINE)


def test_notebooks_share_one_data_root_convention():
    """One variable, one environment variable, one default: the shared data folder beside the repository."""
    defaults = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        first = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        found = DATA_ROOT_LINE.findall("".join(first["source"]))
        assert len(found) == 1, f"{path.name}: no `DATA_ROOT = ...MEDCLIPSVD_DATA_ROOT...` line in its first cell"
        defaults[path.name] = found[0]
    assert len(defaults) >= 2 and set(defaults.values()) == {"../../../shared/data"}, defaults
    # from docs/notebooks, that default is the conftest's shared data folder
    assert (NOTEBOOKS / "../../../shared/data").resolve() == (REPO.parent / "shared" / "data").resolve()


def _execute(name: str, data_root: Path, tmp_path: Path, monkeypatch):
    """Run docs/notebooks/<name> in a fresh kernel; returns (executed notebook, its text outputs, its images)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("MEDCLIPSVD_DATA_ROOT", str(data_root))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's run folder (and MLflow store)
    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "cache"))
    # the kernel imports the package under test, wherever it is
    repo = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    return nb, text, images


@pytest.mark.realdata
def test_quickstart_notebook_runs(shared_data, tmp_path, monkeypatch):
    if not (shared_data / "biomedical" / "BUSI" / "split_BUSI.json").exists():
        pytest.skip(f"BUSI not available under {shared_data / 'biomedical'}")
    nb, text, images = _execute("quickstart.ipynb", shared_data, tmp_path, monkeypatch)
    assert len(images) == 3                                 # ROC, reliability, confusion shown inline
    assert "mode: improved" in text and "95% CI low" in text and "FINISHED" in text
    assert "macro-F1 (%)" in text and "Wilson score interval" in text  # intervals on every per-class rate
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)


# tag values of the real series (their README) and the made-up ones the notebook writes into its tree
PATIENT_TAG_VALUES = ["99C628", "ASAD", "head_neck_ex1", "VS-SEG-001", "20200411", "19940904", "20221208",
                      "Doe^Synthetic", "SYN-MRN", "19500101", "20240101"]


@pytest.mark.realdata
def test_hospital_ct_notebook_runs(shared_data, tmp_path, monkeypatch):
    needed = ("ct_chest_series_1", "ct_abdomen_series_2", "ct_headneck_series_3", "mr_brain_series_1", "nifti")
    if not all((shared_data / "volumes" / n).is_dir() for n in needed):
        pytest.skip(f"the real volumes are not available under {shared_data / 'volumes'}")
    nb, text, images = _execute("hospital_ct.ipynb", shared_data, tmp_path, monkeypatch)
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # windows, slice policies, other volumes, the tree's patients (matplotlib); slice + study confusion, study
    # ROC and reliability (PNG files)
    assert len(images) == 8
    # the real volumes were read with their geometry: the NIfTI stored RAS comes out canonical LPS
    assert "(48, 512, 512)" in text and "(0.635, 0.635, 2.0)" in text and "RAS" in text and "-1024 .. 1679 HU" in text
    assert "slices:4 -> (4, 3, 512, 512)" in text
    assert "12 patients, 96 DICOM files" in text and "no patient in two splits" in text
    assert "trained steps: 3" in text and "test, per slice" in text and "test, per study" in text
    assert "study level: 4 studies of 3 slices each" in text
    assert not [v for v in PATIENT_TAG_VALUES if v in text]
