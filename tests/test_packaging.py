"""A real wheel: `pip wheel --no-deps .` ships pipelines/ and configs/ (kept at the repository's top level) inside
the package, and medclipsvd run from the unpacked wheel (no checkout beside it) finds and uses them.

The wheel is built from a copy of the sources without build isolation (no network), unpacked into a folder that
is put first on PYTHONPATH, and the CLI runs from a working directory outside the repository."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["medclipsvd", "pipelines", "configs", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]

pytestmark = pytest.mark.slow  # builds a wheel: a few seconds on a quiet machine


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_shipped"))
        else:
            shutil.copy2(path, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(root / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (found,) = (root / "dist").glob("medclipsvd-*.whl")
    return found


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def _run(site: Path, cwd: Path, *args: str, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLIPSVD_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def test_wheel_contains_every_pipeline_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = "medclipsvd/_shipped/"
    assert shipped + "pipelines/chest_xray.yaml" in names
    for folder in ("pipelines", "configs"):
        expected = {f"{shipped}{p.relative_to(REPO).as_posix()}" for p in (REPO / folder).rglob("*.yaml")}
        assert expected and expected <= names, sorted(expected - names)[:5]
    assert "medclipsvd/backbones/configs/clip-vit-b16.json" in names  # package data as before
    assert not any(n.startswith(("tests/", "pipelines/", "configs/")) for n in names)  # nothing at the top level


def test_unpacked_wheel_lists_and_loads_pipelines_outside_the_checkout(unpacked, tmp_path):
    probe = ("import json, medclipsvd\n"
             "from medclipsvd.engine.config import pipelines_dir, configs_dir\n"
             "from medclipsvd.engine.pipeline_spec import spec_from_pipeline\n"
             "spec = spec_from_pipeline('breast_ultrasound', data_root='data', output='out', backbone='tiny-clip')\n"
             "print(json.dumps({'package': medclipsvd.__file__, 'pipelines': str(pipelines_dir()),"
             " 'configs': str(configs_dir()), 'lr': spec.hp.lr, 'dataset': spec.dataset}))")
    out = _run(unpacked, tmp_path, "-c", probe)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["package"].startswith(str(unpacked))
    assert info["pipelines"].startswith(str(unpacked)) and info["configs"].startswith(str(unpacked))
    assert info["dataset"] == "BUSI" and info["lr"] > 0

    listed = _run(unpacked, tmp_path, "-m", "medclipsvd.cli.app", "pipelines", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {json.loads(line)["name"] for line in listed.stdout.splitlines()}
    assert names == {p.stem for p in (REPO / "pipelines").glob("*.yaml")}


def test_environment_overrides_still_win(unpacked, tmp_path):
    own = tmp_path / "my-pipelines"
    own.mkdir()
    shutil.copy2(REPO / "pipelines" / "chest_xray.yaml", own / "my_xray.yaml")
    env_probe = ("import os, json; os.environ['MEDCLIPSVD_PIPELINES_DIR'] = %r\n"
                 "from medclipsvd.engine.config import list_pipelines; print(json.dumps(list_pipelines()))" % str(own))
    out = _run(unpacked, tmp_path, "-c", env_probe)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["my_xray"]


@pytest.mark.realdata
def test_unpacked_wheel_trains_a_pipeline(unpacked, tmp_path, shared_data):
    """`train --pipeline` from the wheel: the pipeline and its configs come from the package."""
    out = _run(unpacked, tmp_path, "-m", "medclipsvd.cli.app", "train", "--pipeline", "breast_ultrasound",
               "--data-root", str(shared_data / "biomedical"), "--backbone", "tiny-biomedclip", "--shots", "1",
               "--max-steps", "2", "--device", "cpu", "--no-mlflow", "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["dataset"] == "BUSI" and results["eval"]["test"]["n"] > 0
