"""A registered model as data: `medclipsvd predict` (and anything else in medclipsvd that loads a model)
reads only MLmodel (YAML), the JSON configuration and the adapter's safetensors from the model folder and
builds the predictor from the installed package. No code from the folder is imported or executed (the
folder's pyfunc_model.py is there for `mlflow.pyfunc` / `mlflow models serve`, which keep MLflow's own
trust model: see docs/mlflow.md).

At registration `seal_model_dir` records the sha256 of the model configuration and of every adapter file in
MLmodel's metadata (and `register_run` in the model version's tags) and removes this machine's absolute
paths from MLmodel; `load_predictor` checks the files against both records before using them."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from medclipsvd.errors import MedClipSVDError
from medclipsvd.io.hashing import sha256_file

MLMODEL = "MLmodel"
HASHES_KEY = "medclipsvd_sha256"      # MLmodel metadata: {relative path: sha256}
HASHES_TAG = "medclipsvd.sha256"      # model version tag: the same mapping as compact JSON
PYFUNC = "python_function"


class ModelIntegrityError(MedClipSVDError):
    """A model's files differ from the hashes recorded at registration."""


def hashed_files(model_dir: Path, artifacts: dict[str, str]) -> list[Path]:
    """The files whose hashes are recorded: the model configuration and everything in the adapter folder
    (not a bundled backbone: its weight fingerprint is checked against the adapter on every load)."""
    files = [model_dir / artifacts["config"]]
    adapter = model_dir / artifacts["adapter"]
    files += sorted(p for p in adapter.rglob("*") if p.is_file())
    return files


def file_hashes(model_dir: Path, artifacts: dict[str, str]) -> dict[str, str]:
    return {p.relative_to(model_dir).as_posix(): sha256_file(p) for p in hashed_files(model_dir, artifacts)}


def seal_model_dir(model_dir: str | os.PathLike) -> dict[str, str]:
    """Rewrite MLmodel without absolute paths (artefact source URIs, the code file's original location) and
    with the sha256 of the configuration and adapter files in its metadata; returns those hashes."""
    from mlflow.models import Model

    model_dir = Path(model_dir)
    model = Model.load(str(model_dir / MLMODEL))
    flavor = model.flavors[PYFUNC]
    for spec in (flavor.get("artifacts") or {}).values():
        spec.pop("uri", None)  # where the files were on the registering machine: not needed to load
    if flavor.get("model_code_path"):
        flavor["model_code_path"] = Path(flavor["model_code_path"]).name  # MLflow loads it by its base name
    hashes = file_hashes(model_dir, _artifact_paths(model_dir, flavor))
    model.metadata = {**(model.metadata or {}), HASHES_KEY: hashes}
    model.save(str(model_dir / MLMODEL))
    return hashes


def _artifact_paths(model_dir: Path, flavor: dict) -> dict[str, str]:
    """{name: path relative to the model folder}, refusing paths that leave the folder."""
    out = {}
    root = model_dir.resolve()
    for name, spec in (flavor.get("artifacts") or {}).items():
        rel = spec.get("path") if isinstance(spec, dict) else None
        if not isinstance(rel, str) or not rel:
            raise MedClipSVDError(f"{model_dir / MLMODEL}: artefact {name!r} has no path")
        target = (model_dir / rel).resolve()
        if os.path.isabs(rel) or not target.is_relative_to(root):
            raise MedClipSVDError(f"{model_dir / MLMODEL}: artefact {name!r} points outside the model folder "
                                  f"({rel}); refusing to read it")
        out[name] = rel
    for required in ("config", "adapter"):
        if required not in out:
            raise MedClipSVDError(f"{model_dir} is not a medclipsvd model: MLmodel lists no {required!r} "
                                  "artefact (register it with `medclipsvd register`)")
    return out


def read_mlmodel(model_dir: Path) -> tuple[dict[str, str], dict | None]:
    """(artefact paths, recorded hashes or None) from MLmodel, parsed as plain YAML."""
    import yaml

    path = model_dir / MLMODEL
    if not path.is_file():
        raise MedClipSVDError(f"{model_dir} is not an MLflow model folder ({MLMODEL} is missing); pass a folder "
                              "written by `medclipsvd register`, or models:/NAME@ALIAS")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MedClipSVDError(f"{path} cannot be read ({str(exc).splitlines()[0]})") from None
    flavor = (doc or {}).get("flavors", {}).get(PYFUNC) if isinstance(doc, dict) else None
    if not isinstance(flavor, dict):
        raise MedClipSVDError(f"{path} has no python_function flavour; it is not a medclipsvd model")
    hashes = ((doc.get("metadata") or {}).get(HASHES_KEY))
    return _artifact_paths(model_dir, flavor), hashes if isinstance(hashes, dict) else None


def verify(model_dir: Path, artifacts: dict[str, str], recorded: dict, where: str) -> None:
    actual = file_hashes(model_dir, artifacts)
    changed = sorted(k for k in set(recorded) | set(actual) if recorded.get(k) != actual.get(k))
    if changed:
        raise ModelIntegrityError(
            f"the model files differ from the sha256 recorded in {where}: {', '.join(changed[:3])}"
            f"{' …' if len(changed) > 3 else ''} (altered, damaged or replaced after registration); refusing to "
            "load it. Register the run again (`medclipsvd register`) or restore the model folder")


def verify_served_files(config_path: str | os.PathLike) -> None:
    """For the pyfunc (mlflow.pyfunc / `mlflow models serve`): check the data files against MLmodel's
    recorded hashes. The model folder is the nearest parent of the configuration that holds MLmodel."""
    for parent in list(Path(config_path).resolve().parents)[:3]:
        if (parent / MLMODEL).is_file():
            artifacts, recorded = read_mlmodel(parent)
            if recorded is not None:
                verify(parent, artifacts, recorded, MLMODEL)
            return


def _version_tags(model: str, tracking_uri: str) -> dict | None:
    """Tags of the registered version behind a models:/NAME/VERSION or models:/NAME@ALIAS URI."""
    from mlflow import MlflowClient

    ref = model.removeprefix("models:/")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return dict(client.get_model_version_by_alias(name, alias).tags)
    name, _, version = ref.rpartition("/")
    if name and version.isdigit():
        return dict(client.get_model_version(name, version).tags)
    return None


@contextlib.contextmanager
def _tracking_uri_env(uri: str):
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def load_predictor(model: str, tracking_uri: str | None = None, overrides: dict | None = None,
                   device: str = "cpu", log=None):
    """A Predictor for `model` (models:/…, runs:/… or a local folder), built from data files only."""
    from medclipsvd.tracking import store
    from medclipsvd.tracking.predictor import Predictor

    say = log or (lambda _msg: None)
    remote = model.startswith(("models:/", "runs:/"))
    with tempfile.TemporaryDirectory(prefix="medclipsvd-model-") as tmp:
        tags = None
        if remote:
            import mlflow
            from mlflow.exceptions import MlflowException

            uri = store.resolve_tracking_uri(tracking_uri)
            from medclipsvd.tracking.registry_checks import check_model_source

            check_model_source(model, uri)  # a run in MLflow's trash is not served
            try:
                if model.startswith("models:/"):
                    tags = _version_tags(model, uri)
                with _tracking_uri_env(uri):  # parts of MLflow resolve models:/ against the global URI
                    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=tmp,
                                                                         tracking_uri=uri, registry_uri=uri))
            except MlflowException as exc:
                raise store.TrackingError(f"cannot load model {model!r} from {store.display_uri(uri)}: "
                                          f"{str(exc).splitlines()[0][:300]}. Check the name and alias (MLflow UI, "
                                          "Models tab) and --tracking-uri.") from None
        else:
            model_dir = Path(model)
            if not model_dir.is_dir():
                raise MedClipSVDError(f"--model {model}: no such folder; give models:/NAME@ALIAS, "
                                      "models:/NAME/VERSION, runs:/RUN_ID/model or a model folder")
        artifacts, recorded = read_mlmodel(model_dir)
        if recorded is not None:
            verify(model_dir, artifacts, recorded, f"{MLMODEL}")
        tagged = (tags or {}).get(HASHES_TAG)
        if tagged:
            try:
                verify(model_dir, artifacts, json.loads(tagged), f"the model version's tag {HASHES_TAG}")
            except ValueError:
                raise ModelIntegrityError(f"the tag {HASHES_TAG} of {model} is not valid JSON") from None
        if recorded is None and not tagged:
            say(f"note: {model} was registered without file hashes (an older medclipsvd); its files are not "
                "verified. Register the run again to add them.")
        paths = {k: str(model_dir / v) for k, v in artifacts.items()}
        return Predictor.from_files(paths["config"], paths["adapter"], bundle=paths.get("backbone"),
                                    tokenizer_dir=paths.get("tokenizer"), overrides=overrides, device=device)
