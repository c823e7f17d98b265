"""A registered model as data: `medclipsvd predict` (and anything else in medclipsvd that loads a model)
reads only MLmodel (YAML), the JSON configuration and the adapter's safetensors from the model folder and
builds the predictor from the installed package. No code from the folder is imported or executed (the
folder's pyfunc_model.py is there for `mlflow.pyfunc` / `mlflow models serve`, which keep MLflow's own
trust model: see docs/mlflow.md).

At registration `seal_model_dir` records the sha256 of the model configuration and of every adapter file in
MLmodel's metadata and removes this machine's absolute paths from MLmodel; `log_run_model` / `register_run`
record the same hashes OUTSIDE the files: as a tag of the LoggedModel, of the run and of the model version.
A digest inside the folder only catches damage: whoever can change the files can rewrite MLmodel too. So
`load_predictor` trusts a model only when its files match a digest stored elsewhere: the registry tag of
the URI's version / LoggedModel / run, or the digest the caller gives (`--sha256`). A folder with no such
digest loads only when the caller says they trust it (`--trust-unverified`), and a warning says so."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medclipsvd.errors import MedClipSVDError
from medclipsvd.io.hashing import sha256_file

MLMODEL = "MLmodel"
HASHES_KEY = "medclipsvd_sha256"      # MLmodel metadata: {relative path: sha256}
HASHES_TAG = "medclipsvd.sha256"      # model version / LoggedModel tag: the same mapping as compact JSON
PYFUNC = "python_function"


@dataclass(frozen=True)
class TrustOptions:
    """How a caller names the two ways of vouching for a model, for the messages."""

    sha256: str     # the digest option, "{}" where the digest goes
    trust: str      # the explicit trust option

    def pin(self, digest: str = "HEX") -> str:
        return self.sha256.format(digest)

    @property
    def sha256_name(self) -> str:
        return self.sha256.split("{}")[0].rstrip(' ="')


CLI_OPTIONS = TrustOptions("--sha256 {}", "--trust-unverified")
API_OPTIONS = TrustOptions('sha256="{}"', "trust_unverified=True")


class ModelIntegrityError(MedClipSVDError):
    """A model's files differ from the hashes recorded at registration."""


class UnverifiedModelError(ModelIntegrityError):
    """Nothing outside a model's files records their digest, and the caller did not vouch for them."""


def run_hashes_tag(name: str) -> str:
    """The run tag holding the hashes of the run's LoggedModel `name` (what `runs:/RUN_ID/name` loads)."""
    return f"{HASHES_TAG}.{name}"


def hashes_json(hashes: dict[str, str]) -> str:
    return json.dumps(hashes, separators=(",", ":"), sort_keys=True)


def file_set_digest(hashes: dict[str, str]) -> str:
    """One sha256 for a sealed file set, defined so that coreutils recompute it: the sha256 of `sha256sum`'s
    output lines ("HASH  PATH") for the files in byte order of their paths relative to the model folder:
    cd MODEL && find artifacts/model_config.json artifacts/adapter -type f | LC_ALL=C sort | xargs sha256sum
    | sha256sum"""
    lines = "".join(f"{hashes[k]}  {k}\n" for k in sorted(hashes, key=lambda k: k.encode()))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_sha256_option(value: str | None, option: str = "--sha256") -> str | None:
    """The digest a caller gives (64 hex digits, any case), or None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise MedClipSVDError(f"{option} {value!r}: expected the 64 hex digits of the model's file digest (printed "
                              "by `medclipsvd register`, or by `predict --trust-unverified`)")
    return text


def hashed_files(model_dir: Path, artifacts: dict[str, str]) -> list[Path]:
    """The files whose hashes are recorded: the model configuration and everything in the adapter folder
    (not a bundled backbone's weights: their fingerprint is checked against the adapter on every load; the
    other files of a bundled model folder are hashed)."""
    files = [model_dir / artifacts["config"]]
    adapter = model_dir / artifacts["adapter"]
    files += sorted(p for p in adapter.rglob("*") if p.is_file())
    backbone = model_dir / artifacts["backbone"] if artifacts.get("backbone") else None
    if backbone is not None and backbone.is_dir():  # a bundled model folder: its config and tokenizer files
        files += sorted(p for p in backbone.rglob("*") if p.is_file() and p.suffix != ".safetensors")
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
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_yaml

    path = model_dir / MLMODEL
    if not path.is_file():
        raise MedClipSVDError(f"{model_dir} is not an MLflow model folder ({MLMODEL} is missing); pass a folder "
                              "written by `medclipsvd register`, or models:/NAME@ALIAS")
    try:
        doc = load_yaml(path)
    except FileFormatError as exc:
        raise MedClipSVDError(f"{path} cannot be read ({exc.problem})") from None
    except OSError as exc:
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


def verify_digest(model_dir: Path, artifacts: dict[str, str], expected: str, where: str) -> None:
    actual = file_set_digest(file_hashes(model_dir, artifacts))
    if actual != expected:
        raise ModelIntegrityError(
            f"the model files' digest {actual[:16]}… differs from the {where} {expected[:16]}… (another model, or "
            "files altered after it was sealed); refusing to load it. Check the digest, or restore the model")


def verify_served_files(config_path: str | os.PathLike, sha256: str | None = None) -> None:
    """For the pyfunc (mlflow.pyfunc / `mlflow models serve`): check the data files against MLmodel's
    recorded hashes and, when the loader pins it (model_config={"sha256": HEX}), against that digest. The
    model folder is the nearest parent of the configuration that holds MLmodel."""
    expected = check_sha256_option(sha256, 'model_config["sha256"]')
    for parent in list(Path(config_path).resolve().parents)[:3]:
        if (parent / MLMODEL).is_file():
            artifacts, recorded = read_mlmodel(parent)
            if recorded is not None:
                verify(parent, artifacts, recorded, MLMODEL)
            if expected is not None:
                verify_digest(parent, artifacts, expected, 'digest pinned with model_config["sha256"]')
            return
    if expected is not None:
        raise ModelIntegrityError(f"{config_path}: no MLmodel above it, so the pinned digest cannot be checked")


def _outside_record(model: str, client) -> tuple[str, str | None, str]:
    """(the URI to download, the hashes recorded outside the files as JSON or None, where they are) for a
    models:/ or runs:/ URI. A version is resolved once (alias, latest) and downloaded by its number, so the
    files and the tag come from the same version even if the alias moves meanwhile."""
    if model.startswith("runs:/"):
        run_id, _, path = model.removeprefix("runs:/").partition("/")
        name = path.strip("/")
        if not run_id or not name:
            raise MedClipSVDError(f"--model {model}: a runs:/ URI names a run and its model: runs:/RUN_ID/model")
        if "/" in name:  # a file or folder inside a model: no record describes it
            return model, None, f"run tag {HASHES_TAG}.<model name> (the URI names a path inside a model)"
        tag = run_hashes_tag(name)
        run = client.get_run(run_id)
        recorded = run.data.tags.get(tag)
        if recorded:
            return model, recorded, f"run {run_id}'s tag {tag}"
        # logged before runs carried the tag: the run's only LoggedModel of that name (the one MLflow loads)
        found = client.search_logged_models(experiment_ids=[run.info.experiment_id], max_results=2,
                                            filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
        if len(found) == 1 and (found[0].tags or {}).get(HASHES_TAG):
            return model, found[0].tags[HASHES_TAG], f"LoggedModel {found[0].model_id}'s tag {HASHES_TAG}"
        return model, None, f"run {run_id}'s tag {tag}"
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    resolved = get_model_name_and_version(client, model)
    if len(resolved) == 1:  # models:/<model_id>: an MLflow 3 LoggedModel
        (model_id,) = resolved
        recorded = client.get_logged_model(model_id).tags.get(HASHES_TAG)
        return model, recorded, f"LoggedModel {model_id}'s tag {HASHES_TAG}"
    name, version = resolved
    mv = client.get_model_version(name, version)
    recorded, where = (mv.tags or {}).get(HASHES_TAG), f"model version {name}/{version}'s tag {HASHES_TAG}"
    if not recorded and getattr(mv, "model_id", None):
        recorded = client.get_logged_model(mv.model_id).tags.get(HASHES_TAG)
        where = f"LoggedModel {mv.model_id}'s tag {HASHES_TAG} (source of {name}/{version})"
    return f"models:/{name}/{version}", recorded, where


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
                   device: str = "cpu", log=None, *, trust_unverified: bool = False, sha256: str | None = None,
                   options: TrustOptions = CLI_OPTIONS, precision: str = "auto"):
    """A Predictor for `model` (models:/…, runs:/… or a local folder), built from data files only, after its
    files were checked against a digest stored outside them (registry tag, or `sha256`); with none, only if
    `trust_unverified`. `options`: how the caller names sha256/trust_unverified in messages; `precision`: as
    `--precision` (medclipsvd/device.py)."""
    from medclipsvd.serving.inputs import PathPolicy
    from medclipsvd.serving.predictor import Predictor
    from medclipsvd.tracking import store

    say = log or (lambda _msg: None)
    expected = check_sha256_option(sha256, options.sha256_name)
    remote = model.startswith(("models:/", "runs:/"))
    with tempfile.TemporaryDirectory(prefix="medclipsvd-model-") as tmp:
        outside, where = None, None
        if remote:
            import mlflow
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            uri = store.resolve_tracking_uri(tracking_uri)
            from medclipsvd.tracking.registry_checks import check_model_source

            check_model_source(model, uri)  # a run in MLflow's trash is not served
            try:
                client = MlflowClient(uri, registry_uri=uri)
                source, outside, where = _outside_record(model, client)
                with _tracking_uri_env(uri):  # parts of MLflow resolve models:/ against the global URI
                    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
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
        if recorded is not None:  # damage, or an edit that forgot MLmodel; not proof of anything on its own
            verify(model_dir, artifacts, recorded, MLMODEL)
        if outside:
            try:
                outside_hashes = json.loads(outside)
            except ValueError:
                raise ModelIntegrityError(f"the {where} of {model} is not valid JSON") from None
            if not isinstance(outside_hashes, dict):
                raise ModelIntegrityError(f"the {where} of {model} is not a mapping of file hashes")
            verify(model_dir, artifacts, outside_hashes, where)
        if expected is not None:
            verify_digest(model_dir, artifacts, expected, f"digest given ({options.sha256_name})")
        if not outside and expected is None:
            subject = model if remote else f"model folder {model}"
            reason = _unverified_reason(remote, where, recorded is not None)
            if not trust_unverified:
                raise UnverifiedModelError(
                    f"{subject}: {reason}, so its integrity cannot be checked. Pass {options.pin()} (the digest of "
                    f"its sealed files) or {options.trust} if you trust it"
                    + (", or register the run again (`medclipsvd register`)" if remote else ""))
            digest = file_set_digest(file_hashes(model_dir, artifacts))
            say(f"warning: {subject} is unverified ({reason}); loaded because of {options.trust}. Its files' "
                f"sha256 digest is {digest}: pass {options.pin(digest)} to pin it")
        elif not outside:
            say(f"note: {model}: its files match the digest given ({options.sha256_name})")
        paths = {k: str(model_dir / v) for k, v in artifacts.items()}
        return Predictor.from_files(paths["config"], paths["adapter"], bundle=paths.get("backbone"),
                                    tokenizer_dir=paths.get("tokenizer"), overrides=overrides, device=device,
                                    paths=PathPolicy.local(), precision=precision)


def load_model(model: str, *, tracking_uri: str | None = None, trust_unverified: bool = False,
               sha256: str | None = None, overrides: dict | None = None, device: str = "cpu", log=None):
    """A Predictor from a registered model (models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest,
    models:/<model_id>, runs:/RUN_ID/model) or a model folder, its files checked against the digest
    recorded outside them (registry tags) or given as `sha256` (the hex digest `register` prints). A
    folder with no such digest loads only with `trust_unverified=True`, with a warning (`log`, else
    Python's warnings). Inputs may name any local file. What `api.load_model` calls."""
    if log is None:
        import warnings

        def log(message: str) -> None:
            if message.startswith("warning:"):
                warnings.warn(message.removeprefix("warning: "), UserWarning, stacklevel=3)

    return load_predictor(model, tracking_uri, overrides=overrides, device=device, log=log,
                          trust_unverified=trust_unverified, sha256=sha256, options=API_OPTIONS)


def _unverified_reason(remote: bool, where: str | None, sealed: bool) -> str:
    if remote:
        return f"no digest of its files is recorded outside them (no {where})"
    if sealed:
        return "its only digest is inside it (MLmodel), which whoever can change its files can rewrite too"
    return "no digest of its files is recorded anywhere"
