"""Export fixtures: one tiny adapter trained for two steps (tiny-clip, random init) on synthetic 2-D data whose
DICOMs carry fake patient tags, with a MONAI `preprocess:` in its pipeline. The synthetic series/NIfTI writers
of the data tests are reused (tests/data/volume_synth.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA_TESTS = HERE.parent / "data"
if str(DATA_TESTS) not in sys.path:
    sys.path.insert(0, str(DATA_TESTS))


@pytest.fixture(scope="session")
def trained_adapter(tmp_path_factory) -> Path:
    from medclipsvd import api
    from medclipsvd.engine.synthetic import write_synthetic_dataset

    base = tmp_path_factory.mktemp("export-train")
    data = write_synthetic_dataset(base / "data", patients_per_class=3, images_per_patient=1, size=24)
    pipeline = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    pipeline.update(name="export-test", preprocess=[
        {"name": "ScaleIntensityRanged", "args": {"a_min": 0.0, "a_max": 1.0, "b_min": 0.05, "b_max": 0.95}},
        {"name": "RandGaussianNoised", "args": {"prob": 0.5, "std": 0.01}}])  # augmentation: not in the bundle
    path = base / "export-test.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    api.run_pipeline(str(path), data, base / "run", backbone="tiny-clip", shots=1, max_steps=2, device="cpu",
                     progress=False, plots=False)
    return base / "run" / "adapter"
