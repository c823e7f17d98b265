"""Every example command of every `--help` runs as printed (issue 21): in a scratch folder holding the data the
examples name (a BUSI-shaped tree under data/biomedical and ../shared/data/biomedical, a hospital CT tree,
a DICOM series, a NIfTI volume, two scans), in the order a user would follow them, so each run folder an
example reads (runs/busi-k4, runs/ct, ct-split.json, the registered model) is one an earlier example wrote.

What the test changes, and only this: placeholders in capitals (DATA_ROOT, RUN_ID) get values; an example
that names no backbone (the pipeline's pretrained one, a download) runs with tiny-biomedclip; training is
capped at 2 steps. Everything else (options, paths, MLflow in ./mlruns) is the example's own."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from medclipsvd.cli.app import run

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_vocabulary import COMMANDS, _examples, _help  # noqa: E402
from volume_synth import write_nifti, write_series  # noqa: E402

# the order a user follows: data first, then training, then what reads a trained run
ORDER = ["data list", "summary", "data split", "data check", "train", "evaluate", "interpret", "register",
         "predict", "export", "demo", "benchmark", "sync"]


def all_examples() -> list[str]:
    seen: dict[str, None] = {}
    for command in ["", *sorted(COMMANDS)]:
        for block in _examples(_help(command)):
            seen.setdefault(" ".join(line.strip().rstrip("\\").strip() for line in block), None)
    return list(seen)


def _key(example: str) -> tuple:
    words = shlex.split(example)[1:]
    name = " ".join(words[:2]) if " ".join(words[:2]) in COMMANDS else words[0]
    # data split writes the split file that data check --split-file reads; busi-k4 trains before runs/ct
    rank = ORDER.index(name) if name in ORDER else len(ORDER)
    return rank, "--split-file" in words, "ct_study_folder" in words


def _image(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


def _busi(root: Path) -> None:
    from medclipsvd.data.registry import dataset_info

    info = dataset_info("BUSI")
    layout = info.layouts[0]
    ddir = root / layout.dir
    base = ddir / layout.image_dir if layout.image_dir else ddir
    split = {"train": [], "val": [], "test": []}
    n = 0
    for label, cname in enumerate(info.classnames):
        for s, count in (("train", 4), ("val", 1), ("test", 2)):
            for i in range(count):
                rel = f"{cname.replace(' ', '_')}/{s}{label}_{i}.png"
                _image(base / rel, seed=n)
                n += 1
                split[s].append([rel, label, cname])
    (ddir / layout.split_file).write_text(json.dumps(split))


def _ct_tree(root: Path) -> None:
    """hospital/ct/<class>/<patient>/<series>: small synthetic CT series, 4 patients per class."""
    for c, cls in enumerate(("nodule", "normal")):
        for p in range(4):
            offset = 300.0 * c + 10 * p
            write_series(root / cls / f"patient{c}{p}" / "series_1", n=6, seed=p,
                         uid=f"1.2.826.0.1.99.{c}.{p}", hu=lambda j, r, k, o=offset: np.full((r, k), -500.0 + o + 50 * j))


def _workspace(tmp: Path) -> Path:
    work = tmp / "work"
    _busi(work / "data" / "biomedical")
    _busi(tmp / "shared" / "data" / "biomedical")  # ../shared/data/biomedical seen from work/
    _ct_tree(work / "hospital" / "ct")
    write_series(work / "study" / "series_3", n=6, seed=9, uid="1.2.826.0.1.99.7.7")
    write_nifti(work / "ct.nii.gz", np.linspace(-1000, 1000, 6 * 7 * 6).reshape(6, 7, 6).astype(np.int16))
    write_series(work / "scan1_series", n=1, seed=3, uid="1.2.826.0.1.99.8.8")
    (work / "scan1_series" / "IMG000.dcm").rename(work / "scan1.dcm")
    _image(work / "scan2.png", seed=99)
    return work


def _argv(example: str, work: Path) -> list[str]:
    words = shlex.split(example)[1:]
    values = {"DATA_ROOT": "../shared/data/biomedical"}
    if "RUN_ID" in words:
        values["RUN_ID"] = json.loads((work / "runs" / "busi-k4" / "results.json").read_text())["mlflow_run_id"]
    words = [values.get(w, w) for w in words]
    if words[0] in ("train", "benchmark") and "--backbone" not in words:
        words += ["--backbone", "tiny-biomedclip"]
    return words


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    from medclipsvd.engine.config import HParams

    tmp = tmp_path_factory.mktemp("examples")
    work = _workspace(tmp)
    mp = pytest.MonkeyPatch()
    real = HParams.total_iterations
    mp.setattr(HParams, "total_iterations", lambda self, n, k: min(2, real(self, n, k)))
    for var in ("MLFLOW_TRACKING_URI", "MEDCLIPSVD_OUTBOX"):
        mp.delenv(var, raising=False)
    mp.setenv("MEDCLIPSVD_CACHE", str(tmp / "cache"))
    mp.chdir(work)
    results = {}
    try:
        for example in sorted(all_examples(), key=_key):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = run(_argv(example, work))
            results[example] = (code, out.getvalue() + err.getvalue())
    finally:
        mp.undo()
    return results


def test_there_are_examples_to_run():
    names = {shlex.split(e)[1] for e in all_examples()}
    assert {"train", "evaluate", "predict", "interpret", "export", "benchmark", "data", "demo"} <= names


@pytest.mark.parametrize("example", all_examples())
def test_help_example_runs_as_printed(outcomes, example):
    code, text = outcomes[example]
    assert code == 0, f"`{example}` exited {code}:\n{text[-3000:]}"
    # stderr went to a buffer, not a terminal: no progress bar redraws (issue 21)
    assert not any(unit in text for unit in ("step/s", "batch/s", "img/s", "matrix/s", "\r")), text[-1500:]
