"""Robustness rows for issue 16, items 2 and 4.

Item 2, integrity that does not check itself: a model's files are trusted only against a digest stored
outside them. The fixtures build a local SQLite MLflow store with three registered models (from three runs):
one untouched, one RE-SEALED BY HAND (its model_config.json changed and MLmodel's sha256 recomputed, as
someone with write access to the artefact store could), and one whose registry tags were removed (as for a
model registered by an older medclipsvd). Every URI form (`models:/N@alias`, `models:/N/1`,
`models:/N/latest`, `models:/m-<id>`, `runs:/<id>/model`) of the re-sealed model must be refused; the
untouched one must load on each. A local model folder (its only digest inside it, or none) loads only
with `--trust-unverified` (warning) or a matching `--sha256`.

Item 4, serving: the pyfunc answers pixel arrays and encoded images; server-side paths only under the serve
root chosen at registration; one answer, without path or traceback, for `/etc/passwd` and a missing file, in
process and over HTTP through MLflow's own scoring app."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

_DATA_TESTS = Path(__file__).resolve().parents[1] / "data"
if str(_DATA_TESTS) not in sys.path:  # the synthetic DICOM series writer of the volume tests
    sys.path.insert(0, str(_DATA_TESTS))
from volume_synth import write_series  # noqa: E402

ISSUE = 16
CLASSES = ("benign", "malignant")
TEMPLATE = "a photo of a {}."
FORMS = ("alias", "version", "latest", "model-id", "runs")


# ------------------------------------------------------------------------------- independent digests
def sealed_hashes(model_dir: Path) -> dict[str, str]:
    """sha256 of model_config.json and every adapter file, by path relative to the model folder (the
    files `register` seals), computed here with hashlib."""
    files = [model_dir / "artifacts" / "model_config.json"]
    files += sorted(p for p in (model_dir / "artifacts" / "adapter").rglob("*") if p.is_file())
    return {p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def set_digest(hashes: dict[str, str]) -> str:
    """The documented file-set digest: sha256 of `sha256sum`'s lines in path order."""
    lines = "".join(f"{hashes[k]}  {k}\n" for k in sorted(hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def reseal_by_hand(model_dir: Path) -> None:
    """What an attacker with write access to the files does: swap the class names (a plausible, well-formed
    change) and rewrite MLmodel's recorded sha256 so that the folder checks itself as intact."""
    import yaml

    cfg_path = model_dir / "artifacts" / "model_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["classnames"] = cfg["classnames"][::-1]
    cfg_path.write_text(json.dumps(cfg, indent=2))
    doc = yaml.safe_load((model_dir / "MLmodel").read_text())
    doc["metadata"]["medclipsvd_sha256"] = sealed_hashes(model_dir)
    (model_dir / "MLmodel").write_text(yaml.safe_dump(doc))


# ------------------------------------------------------------------------------------------ fixtures
def _adapter(dest: Path) -> Path:
    import torch

    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import adapt, save_adapter, sigma_parameters

    bb = adapt(load_backbone("tiny-biomedclip"), "paper")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in sigma_parameters(bb).values():
            p.mul_(1 + 0.3 * torch.rand(p.shape, generator=gen))
    return save_adapter(bb, dest)


def _png(path: Path, seed: int = 0, size: int = 32) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _dicom(path: Path, seed: int = 1, size: int = 32) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    rng = np.random.default_rng(seed)
    ds.set_pixel_data(rng.integers(0, 4000, (size, size), dtype=np.uint16), "MONOCHROME2", 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Store:
    uri: str
    uris: dict[str, dict[str, str]]   # model ("pristine", "resealed", "untagged") -> form -> URI
    run_ids: dict[str, str]
    model_ids: dict[str, str]


def _registered(client, uri: str, exp: str, adapter: Path, name: str, work: Path) -> tuple[str, str]:
    from medclipsvd.tracking.registry import register_run

    run = client.create_run(exp, run_name=name)
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(adapter), "adapter")
    results = work / name / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"classnames": list(CLASSES), "template": TEMPLATE, "run": {}}))
    client.log_artifact(run_id, str(results))
    client.set_terminated(run_id)
    reg = register_run(run_id, name, alias="champion", tracking_uri=uri)
    return run_id, reg.model_id


def _forms(name: str, run_id: str, model_id: str) -> dict[str, str]:
    return {"alias": f"models:/{name}@champion", "version": f"models:/{name}/1", "latest": f"models:/{name}/latest",
            "model-id": f"models:/{model_id}", "runs": f"runs:/{run_id}/model"}


def _artifact_dir(client, model_id: str) -> Path:
    return Path(urllib.parse.urlparse(client.get_logged_model(model_id).artifact_location).path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    from mlflow import MlflowClient

    from medclipsvd.tracking.model_files import HASHES_TAG, run_hashes_tag

    work = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("medclipsvd", artifact_location=(work / "artifacts").as_uri())
    adapter = _adapter(work / "adapter")
    uris, runs, models = {}, {}, {}
    for kind in ("pristine", "resealed", "untagged"):
        name = f"tiny-{kind}"
        runs[kind], models[kind] = _registered(client, uri, exp, adapter, name, work)
        uris[kind] = _forms(name, runs[kind], models[kind])
    reseal_by_hand(_artifact_dir(client, models["resealed"]))
    # an older registration: nothing outside the files records their digest
    client.delete_model_version_tag("tiny-untagged", "1", HASHES_TAG)
    client.delete_logged_model_tag(models["untagged"], HASHES_TAG)
    client.delete_tag(runs["untagged"], run_hashes_tag("model"))
    return Store(uri, uris, runs, models)


_STATE: dict = {}


def _image(c: Corpus) -> Path:
    return _png(c.path("scan.png"), seed=5)


def _predict(c: Corpus, model: str, *extra: str, mentions=(), exit_code: int = 2, line: str = "") -> Scenario:
    argv = ["predict", "--model", model, str(_image(c)), "--device", "cpu", *extra]
    if model.startswith(("models:/", "runs:/")):
        argv += ["--tracking-uri", _STATE["store"].uri]
    return Scenario(argv, list(mentions), exit_code=exit_code, line=line, forbidden=[c.outside])


# ------------------------------------------------------------------------- rows: registry URI forms
def _resealed(form: str, where: str):
    def build(c: Corpus) -> Scenario:
        return _predict(c, _STATE["store"].uris["resealed"][form],
                        mentions=[where, "artifacts/model_config.json", "refusing to load"])
    return build


def resealed_trusted_anyway(c: Corpus) -> Scenario:
    """--trust-unverified vouches for a model without an outside digest, never against one that disagrees."""
    return _predict(c, _STATE["store"].uris["resealed"]["alias"], "--trust-unverified",
                    mentions=["medclipsvd.sha256", "refusing to load"])


def untagged_refused(c: Corpus) -> Scenario:
    return _predict(c, _STATE["store"].uris["untagged"]["version"],
                    mentions=["cannot be checked", "--sha256 HEX", "--trust-unverified", "medclipsvd register"])


def untagged_runs_refused(c: Corpus) -> Scenario:
    return _predict(c, _STATE["store"].uris["untagged"]["runs"],
                    mentions=["cannot be checked", "--sha256 HEX", "--trust-unverified"])


def untagged_trusted(c: Corpus) -> Scenario:
    return _predict(c, _STATE["store"].uris["untagged"]["alias"], "--trust-unverified", exit_code=0,
                    mentions=["unverified", "--trust-unverified", "--sha256"])


REGISTRY_ROWS = [
    Row("resealed-alias", 2, "model integrity", "model re-sealed by hand, `--model models:/N@alias`",
        _resealed("alias", "tag medclipsvd.sha256"), issue=ISSUE),
    Row("resealed-version", 2, "model integrity", "model re-sealed by hand, `--model models:/N/1`",
        _resealed("version", "tag medclipsvd.sha256"), issue=ISSUE),
    Row("resealed-latest", 2, "model integrity", "model re-sealed by hand, `--model models:/N/latest`",
        _resealed("latest", "tag medclipsvd.sha256"), issue=ISSUE),
    Row("resealed-model-id", 2, "model integrity", "model re-sealed by hand, `--model models:/m-<id>` (LoggedModel)",
        _resealed("model-id", "LoggedModel"), issue=ISSUE),
    Row("resealed-runs", 2, "model integrity", "model re-sealed by hand, `--model runs:/<id>/model`",
        _resealed("runs", "tag medclipsvd.sha256.model"), issue=ISSUE),
    Row("resealed-trust-unverified", 2, "model integrity", "re-sealed model with `--trust-unverified`",
        resealed_trusted_anyway, issue=ISSUE),
    Row("untagged-version", 2, "model integrity", "registered version without any digest tag (older registration)",
        untagged_refused, issue=ISSUE),
    Row("untagged-runs", 2, "model integrity", "`runs:/<id>/model` of a run without digest tags",
        untagged_runs_refused, issue=ISSUE),
    Row("untagged-trusted", 2, "model integrity", "same with `--trust-unverified`: loads, with a warning",
        untagged_trusted, issue=ISSUE),
]


# ---------------------------------------------------------------------------- rows: local folders
def _folder(c: Corpus, sealed: bool = True) -> Path:
    """A copy of the module's model folder (sealed: MLmodel holds the sha256; else: no digest at all)."""
    import yaml

    dest = Path(shutil.copytree(_STATE["folder"], c.path("model")))
    if not sealed:
        doc = yaml.safe_load((dest / "MLmodel").read_text())
        doc["metadata"].pop("medclipsvd_sha256")
        (dest / "MLmodel").write_text(yaml.safe_dump(doc))
    return dest


def folder_self_sealed(c: Corpus) -> Scenario:
    return _predict(c, str(_folder(c)), mentions=["integrity cannot be checked", "--sha256 HEX",
                                                  "--trust-unverified", "inside it"])


def folder_unsealed(c: Corpus) -> Scenario:
    return _predict(c, str(_folder(c, sealed=False)), mentions=["integrity cannot be checked", "--sha256 HEX",
                                                                "--trust-unverified"])


def folder_trusted(c: Corpus) -> Scenario:
    folder = _folder(c)
    digest = set_digest(sealed_hashes(folder))
    return _predict(c, str(folder), "--trust-unverified", exit_code=0,
                    mentions=["unverified", "--trust-unverified", f"--sha256 {digest}"])


def folder_unsealed_trusted(c: Corpus) -> Scenario:
    return _predict(c, str(_folder(c, sealed=False)), "--trust-unverified", exit_code=0,
                    mentions=["unverified", "no digest", "--trust-unverified"])


def folder_sha256(c: Corpus) -> Scenario:
    folder = _folder(c)
    return _predict(c, str(folder), "--sha256", set_digest(sealed_hashes(folder)).upper(), exit_code=0,
                    line="note:", mentions=["match", "--sha256"])


def folder_resealed_sha256(c: Corpus) -> Scenario:
    """The digest the owner pinned, against a copy re-sealed by hand."""
    folder = _folder(c)
    pinned = set_digest(sealed_hashes(folder))
    reseal_by_hand(folder)
    return _predict(c, str(folder), "--sha256", pinned, mentions=["--sha256", "differs", "refusing to load"])


def folder_wrong_sha256(c: Corpus) -> Scenario:
    other = hashlib.sha256(b"another model").hexdigest()
    return _predict(c, str(_folder(c)), "--sha256", other, mentions=["--sha256", "differs", "refusing to load"])


def folder_bad_sha256(c: Corpus) -> Scenario:
    return _predict(c, str(_folder(c)), "--sha256", "abc123", mentions=["--sha256", "64 hex digits"])


def adapter_with_sha256(c: Corpus) -> Scenario:
    adapter = Path(shutil.copytree(_STATE["folder"] / "artifacts" / "adapter", c.path("adapter")))
    argv = ["predict", "--adapter", str(adapter), str(_image(c)), "--sha256", "0" * 64]
    return Scenario(argv, ["--sha256", "--trust-unverified", "--model"], forbidden=[c.outside])


LOCAL_ROWS = [
    Row("folder-self-sealed", 2, "model integrity", "local model folder whose only digest is its own MLmodel",
        folder_self_sealed, issue=ISSUE),
    Row("folder-unsealed", 2, "model integrity", "local model folder with no digest at all", folder_unsealed,
        issue=ISSUE),
    Row("folder-trust-unverified", 2, "model integrity", "self-sealed folder with `--trust-unverified` (warning)",
        folder_trusted, issue=ISSUE),
    Row("folder-unsealed-trusted", 2, "model integrity", "unsealed folder with `--trust-unverified` (warning)",
        folder_unsealed_trusted, issue=ISSUE),
    Row("folder-sha256", 2, "model integrity", "self-sealed folder with its correct `--sha256` (upper case)",
        folder_sha256, issue=ISSUE),
    Row("folder-resealed-sha256", 2, "model integrity", "folder re-sealed by hand, with the owner's `--sha256`",
        folder_resealed_sha256, issue=ISSUE),
    Row("folder-wrong-sha256", 2, "model integrity", "`--sha256` of another model", folder_wrong_sha256, issue=ISSUE),
    Row("folder-bad-sha256", 2, "option validation", "`--sha256 abc123`", folder_bad_sha256, issue=ISSUE),
    Row("adapter-sha256", 2, "option validation", "`predict --adapter DIR --sha256 …`", adapter_with_sha256,
        issue=ISSUE),
]


# ------------------------------------------------------------------------------- rows: serve root
def _serve_root(value: str, *mentions: str):
    def build(c: Corpus) -> Scenario:
        return Scenario(["register", "--run-id", "0" * 32, "--name", "x", "--serve-root", value,
                         "--tracking-uri", f"sqlite:///{c.path('store/mlflow.db')}"],
                        ["--serve-root", *mentions], forbidden=[c.outside])
    return build


SERVE_ROWS = [
    Row("serve-root-relative", 4, "option validation", "`register --serve-root incoming` (relative)",
        _serve_root("incoming", "absolute"), issue=ISSUE),
    Row("serve-root-slash", 4, "option validation", "`register --serve-root /`",
        _serve_root("/", "file-system root"), issue=ISSUE),
]

ROWS = REGISTRY_ROWS + LOCAL_ROWS + SERVE_ROWS


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A model folder as `register` saves it (sealed: MLmodel holds the sha256 of its data files)."""
    from medclipsvd.tracking.registry import build_model_config, save_pyfunc

    work = tmp_path_factory.mktemp("folder")
    adapter = _adapter(work / "adapter")
    config = build_model_config(adapter, {"classnames": list(CLASSES), "template": TEMPLATE}, "run-x")
    return save_pyfunc(config, adapter, work)


@pytest.mark.parametrize("row", REGISTRY_ROWS, ids=lambda r: r.id)
def test_registry_row(row: Row, tmp_path, store):
    _STATE["store"] = store
    run_row(row, tmp_path)


@pytest.mark.parametrize("row", LOCAL_ROWS, ids=lambda r: r.id)
def test_local_row(row: Row, tmp_path, model_folder):
    _STATE["folder"] = model_folder
    run_row(row, tmp_path)


@pytest.mark.parametrize("row", SERVE_ROWS, ids=lambda r: r.id)
def test_serve_row(row: Row, tmp_path):
    run_row(row, tmp_path)


# ------------------------------------------------------------------ item 2: what the rows rest on
def test_untouched_model_loads_on_every_uri_form(store, tmp_path):
    """The control of the re-sealed rows: the same store, the same forms, an untouched model loads."""
    image = _png(tmp_path / "scan.png", seed=5)
    for form, uri in store.uris["pristine"].items():
        out = run_cli(["predict", "--model", uri, str(image), "--device", "cpu", "--tracking-uri", store.uri])
        assert out.code == 0, (form, out.text[-2000:])
        assert "error:" not in out.text and "warning:" not in out.text and "Traceback" not in out.text, out.text
        assert "scan.png" in out.text and any(c in out.text for c in CLASSES)


def test_registration_records_the_hashes_outside_the_files(store, tmp_path):
    """Version, LoggedModel and run tags each hold the sha256 of the files as they are in the store."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(store.uri)
    model_id, run_id = store.model_ids["pristine"], store.run_ids["pristine"]
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=client.get_logged_model(model_id).artifact_location,
                                                     dst_path=str(tmp_path)))
    expected = sealed_hashes(local)
    assert set(expected) == {"artifacts/model_config.json", "artifacts/adapter/adapter_config.json",
                             "artifacts/adapter/adapter.safetensors"}
    tags = [client.get_model_version("tiny-pristine", "1").tags["medclipsvd.sha256"],
            client.get_logged_model(model_id).tags["medclipsvd.sha256"],
            client.get_run(run_id).data.tags["medclipsvd.sha256.model"]]
    assert [json.loads(t) for t in tags] == [expected] * 3


def test_coreutils_compute_the_documented_digest(model_folder):
    """docs/mlflow.md's shell recipe gives the digest `--sha256` takes."""
    import subprocess

    if not shutil.which("sha256sum"):
        pytest.skip("no sha256sum on this machine")
    cmd = ("find artifacts/model_config.json artifacts/adapter -type f | LC_ALL=C sort | xargs sha256sum "
           "| sha256sum")
    out = subprocess.run(cmd, shell=True, cwd=model_folder, capture_output=True, text=True, check=True)
    from medclipsvd.tracking.model_files import file_set_digest, read_mlmodel

    assert out.stdout.split()[0] == set_digest(sealed_hashes(model_folder))
    assert file_set_digest(read_mlmodel(model_folder)[1]) == out.stdout.split()[0]


def test_python_api_keywords(model_folder, store, tmp_path):
    """api.load_model (tracking.model_files.load_model): the same rules, named as keywords."""
    from medclipsvd import api
    from medclipsvd.tracking.model_files import ModelIntegrityError, UnverifiedModelError

    with pytest.raises(UnverifiedModelError, match=r'sha256="HEX".*trust_unverified=True'):
        api.load_model(str(model_folder), device="cpu")
    with pytest.warns(UserWarning, match="unverified"):
        trusted = api.load_model(str(model_folder), trust_unverified=True, device="cpu")
    pinned = api.load_model(str(model_folder), sha256=set_digest(sealed_hashes(model_folder)), device="cpu")
    image = str(_png(tmp_path / "a.png", seed=2))
    np.testing.assert_allclose(trusted.predict_proba([image]), pinned.predict_proba([image]), atol=1e-6)
    with pytest.raises(ModelIntegrityError, match="differs"):
        api.load_model(str(model_folder), sha256="0" * 64, device="cpu")
    with pytest.raises(ModelIntegrityError, match="medclipsvd.sha256"):
        api.load_model(store.uris["resealed"]["latest"], tracking_uri=store.uri, trust_unverified=True,
                       device="cpu")


# ------------------------------------------------------------------------------------ item 4: serving
SECRET_MARKERS = ("/etc/passwd", "no-such-file", "Traceback", "stack_trace", "site-packages", "File \"")


@pytest.fixture(scope="module")
def served(model_folder, tmp_path_factory):
    """The pyfunc of `model_folder` loaded by MLflow (no serve root), the same registered with a serve root,
    a local predictor for expected values, and images."""
    import mlflow

    from medclipsvd.serving.predictor import Predictor
    from medclipsvd.tracking.registry import build_model_config, save_pyfunc
    from medclipsvd.serving.inputs import PathPolicy

    work = tmp_path_factory.mktemp("served")
    root = work / "incoming"
    images = {"png": _png(root / "case1" / "a.png", seed=11), "dcm": _dicom(root / "case1" / "b.dcm", seed=12)}
    secret = _png(work / "outside" / "secret.png", seed=13)
    (root / "link.png").symlink_to(secret)
    # a series folder under the root whose slices are links to a (readable) series outside it
    (root / "case2").mkdir()
    for f in write_series(work / "outside" / "series", n=4, seed=3):
        (root / "case2" / f.name).symlink_to(f)
    adapter = model_folder / "artifacts" / "adapter"
    config = build_model_config(adapter, {"classnames": list(CLASSES), "template": TEMPLATE}, "run-x")
    config["serve_root"] = str(root)
    (work / "rooted").mkdir()
    rooted_dir = save_pyfunc(config, adapter, work / "rooted")
    local = Predictor.from_files(model_folder / "artifacts" / "model_config.json", adapter,
                                 paths=PathPolicy.local())
    return {"plain": mlflow.pyfunc.load_model(str(model_folder)), "rooted": mlflow.pyfunc.load_model(str(rooted_dir)),
            "local": local, "root": root, "images": images, "secret": secret}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _probs(frame) -> np.ndarray:
    return frame[[f"prob_{c}" for c in CLASSES]].to_numpy(float)


def _refusal(model, value) -> str:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as info:
        model.predict(pd.DataFrame({"image": [value]}))
    return info.value.message


def test_pyfunc_takes_arrays_and_encoded_images(served):
    import pandas as pd
    from PIL import Image

    png, dcm = served["images"]["png"], served["images"]["dcm"]
    expected = served["local"].predict_proba([str(png), str(dcm)])  # read from disk by the local predictor
    pixels = np.asarray(Image.open(png).convert("RGB")).tolist()  # uint8 values as JSON would carry them
    cases = {
        "base64": [_b64(png), _b64(dcm)],
        "data URI": ["data:image/png;base64," + _b64(png), "data:application/dicom;base64," + _b64(dcm)],
        "raw bytes": [png.read_bytes(), dcm.read_bytes()],
    }
    for label, column in cases.items():
        got = served["plain"].predict(pd.DataFrame({"image": column}))
        np.testing.assert_allclose(_probs(got), expected, atol=1e-6, err_msg=label)
    got = served["plain"].predict(pd.DataFrame({"image": [pixels]}))
    np.testing.assert_allclose(_probs(got), expected[:1], atol=1e-6)


def test_pyfunc_without_serve_root_reads_no_path(served):
    existing, missing = _refusal(served["plain"], "/etc/passwd"), _refusal(served["plain"], "/no/such/no-such-file")
    assert existing == missing
    assert "reads no file paths" in existing and "base64" in existing
    inside = _refusal(served["plain"], str(served["images"]["png"]))  # even a real image is not read
    assert inside == existing
    assert not [m for m in SECRET_MARKERS if m in existing]


def test_pyfunc_with_serve_root_reads_only_under_it(served):
    import pandas as pd

    root, png = served["root"], served["images"]["png"]
    expected = served["local"].predict_proba([str(png)])
    for value in (str(png), "case1/a.png"):  # absolute under the root, or relative to it
        got = served["rooted"].predict(pd.DataFrame({"image": [value]}))
        np.testing.assert_allclose(_probs(got), expected, atol=1e-6, err_msg=value)
    answers = {value: _refusal(served["rooted"], value) for value in
               ("/etc/passwd", str(root / "no-such-file.png"), "../outside/secret.png", str(served["secret"]),
                "link.png", "case1/../../outside/secret.png", "case1", "case2", str(root / "case2"))}
    assert len(set(answers.values())) == 1, answers
    answer = next(iter(answers.values()))
    assert "serving root" in answer and str(root) not in answer
    assert not [m for m in SECRET_MARKERS if m in answer]


def test_pyfunc_bad_encoded_input_and_internal_errors(served, monkeypatch):
    import pandas as pd

    from medclipsvd.tracking.pyfunc_serving import INTERNAL_MESSAGE

    broken = base64.b64encode(served["images"]["png"].read_bytes()[:60]).decode()  # a PNG cut short
    message = _refusal(served["plain"], broken)
    assert message.startswith("input row 0: the encoded PNG image") and "medclipsvd-input" not in message
    assert "/tmp" not in message and "Traceback" not in message

    def explode(frame):
        raise RuntimeError(f"boom in {served['root']}")

    monkeypatch.setattr(served["plain"].unwrap_python_model().predictor, "predict_frame", explode)
    with pytest.raises(Exception) as info:
        served["plain"].predict(pd.DataFrame({"image": [_b64(served["images"]["png"])]}))
    assert info.value.message == INTERNAL_MESSAGE


@pytest.fixture(scope="module")
def http_server(served):
    """MLflow's scoring app (what `mlflow models serve` runs) for the plain and the rooted model, on
    loopback ports, in threads of this process."""
    import socket

    import uvicorn
    from mlflow.pyfunc import scoring_server

    servers, urls = [], {}
    for key in ("plain", "rooted"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(scoring_server.init(served[key]), host="127.0.0.1", port=port,
                                               log_level="error"))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        urls[key] = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not all(s.started for s in servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(s.started for s in servers)
    yield urls
    for s in servers:
        s.should_exit = True


def _post(url: str, values: list) -> tuple[int, str]:
    import requests

    body = {"dataframe_split": {"columns": ["image"], "data": [[v] for v in values]}}
    response = requests.post(url + "/invocations", json=body, timeout=60)
    return response.status_code, response.text


@pytest.mark.parametrize("key", ["plain", "rooted"])
def test_http_answers_to_etc_passwd_and_a_missing_file_are_identical(served, http_server, key):
    url = http_server[key]
    missing = str(served["root"] / "no-such-file.png") if key == "rooted" else "/srv/no-such-file.png"
    status_a, body_a = _post(url, ["/etc/passwd"])
    status_b, body_b = _post(url, [missing])
    assert (status_a, body_a) == (status_b, body_b)
    assert status_a == 400
    payload = json.loads(body_a)
    assert set(payload) <= {"error_code", "message", "sqlstate", "error_class"}, payload  # no stack_trace
    assert not [m for m in SECRET_MARKERS if m in body_a] and str(served["root"]) not in body_a, body_a
    # and a real request is answered
    status, body = _post(url, [_b64(served["images"]["png"])])
    assert status == 200, body
    got = np.array([[row[f"prob_{c}"] for c in CLASSES] for row in json.loads(body)["predictions"]])
    np.testing.assert_allclose(got, served["local"].predict_proba([str(served["images"]["png"])]), atol=1e-6)


OLD_PYFUNC = '''
import mlflow
from mlflow.pyfunc import PythonModel


class MedClipSVDModel(PythonModel):
    def load_context(self, context):
        from medclipsvd.tracking.model_files import verify_served_files
        from medclipsvd.tracking.predictor import Predictor

        arts = context.artifacts
        verify_served_files(arts["config"])
        options = dict(context.model_config or {})
        self.predictor = Predictor.from_files(arts["config"], arts["adapter"], bundle=arts.get("backbone"),
                                              tokenizer_dir=arts.get("tokenizer"), overrides=options,
                                              device=options.get("device", "cpu"))

    def predict(self, context, model_input, params=None):
        return self.predictor.predict_frame(model_input)


mlflow.models.set_model(MedClipSVDModel())
'''


def test_folders_registered_earlier_read_no_client_path_either(model_folder, served, tmp_path):
    """A model folder keeps the pyfunc_model.py it was registered with; the earlier one (above: it hands the
    frame straight to the predictor) builds its predictor with the installed package's default: no paths."""
    import mlflow
    import pandas as pd

    import yaml

    folder = Path(shutil.copytree(model_folder, tmp_path / "old"))
    (folder / "pyfunc_model.py").write_text(OLD_PYFUNC)
    doc = yaml.safe_load((folder / "MLmodel").read_text())
    doc["flavors"]["python_function"].pop("config")  # earlier folders declared no load-time options
    (folder / "MLmodel").write_text(yaml.safe_dump(doc))
    model = mlflow.pyfunc.load_model(str(folder))
    with pytest.raises(Exception, match="reads no file paths"):
        model.predict(pd.DataFrame({"image": [str(served["images"]["png"])]}))
    got = model.predict(pd.DataFrame({"image": [_b64(served["images"]["png"])]}))
    np.testing.assert_allclose(_probs(got), served["local"].predict_proba([str(served["images"]["png"])]),
                               atol=1e-6)


def test_serve_root_from_the_serving_environment(model_folder, served, monkeypatch):
    """`mlflow models serve` cannot pass model_config: MLFLOW_PYFUNC_INFERENCE_CONFIG sets the serve root
    (and is confined like the registered one)."""
    import mlflow
    import pandas as pd

    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"serve_root": str(served["root"])}))
    model = mlflow.pyfunc.load_model(str(model_folder))
    got = model.predict(pd.DataFrame({"image": ["case1/a.png"]}))
    np.testing.assert_allclose(_probs(got), served["local"].predict_proba([str(served["images"]["png"])]),
                               atol=1e-6)
    assert _refusal(model, "/etc/passwd") == _refusal(model, "../outside/secret.png")
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"serve_root": "/"}))
    with pytest.raises(Exception, match="file-system root"):
        mlflow.pyfunc.load_model(str(model_folder))
