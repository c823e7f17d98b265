"""Registering a trained run as an MLflow model: `register_run(run_id, name, alias=...)`.

The trained model is logged as an MLflow 3 LoggedModel (`log_run_model`: saved with `mlflow.pyfunc.save_model`,
sealed with the sha256 of its data files, uploaded as the LoggedModel's files and linked as the run's output,
with a signature and a synthetic input example) and a registered version points at it.
It is a pyfunc logged from code (pyfunc_model.py), whose artefacts are the run's adapter
folder and a model_config.json naming the base backbone by registry name and weight fingerprint (plus classes
and prompt template). `bundle_backbone=True` adds the base weights as safetensors (and the tokenizer files of
backbones with a Hugging Face tokenizer; for a backbone named by its folder or hub id, the whole model folder:
config, weights, tokenizer) for servers without access to the weights. Versions are promoted
with aliases (`champion`, `challenger`, ...) and described with tags; MLflow's deprecated stages are not used.

The sha256 of the model's data files is recorded inside it (MLmodel) and, as the trusted record, outside it:
tags of the LoggedModel, of the run (`medclipsvd.sha256.<model name>`, for runs:/ URIs) and of the model
version (see model_files.py). `serve_root` (register --serve-root DIR) is the one folder under which the
served pyfunc reads server-side paths a client sends; it is part of the sealed model_config.json."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import medclipsvd
from medclipsvd.tracking import store
from medclipsvd.tracking.model_files import (HASHES_TAG, file_set_digest, hashes_json, read_mlmodel,
                                             run_hashes_tag, seal_model_dir)
from medclipsvd.serving.inputs import check_serve_root
from medclipsvd.serving.trained_run import MODEL_CONFIG, build_backbone, build_model_config

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
BUNDLE_WEIGHTS = "backbone.safetensors"
BUNDLE_FOLDER = "backbone"  # a backbone named by folder / hub id: its model folder (config, weights, tokenizer)
LOAD_OPTIONS = {"weights": "", "text_dir": "", "device": "", "sha256": "", "serve_root": ""}
SERVE_ROOT_TAG = "medclipsvd.serve_root"  # LoggedModel tag: which serve root its model_config.json holds
_REQUIREMENTS = ("torch", "torchvision", "open-clip-torch", "timm", "transformers", "safetensors", "pandas",
                 "numpy", "pydicom", "nibabel", "pillow")


@dataclass
class Registration:
    name: str
    version: str
    alias: str | None
    model_uri: str          # models:/NAME/VERSION
    alias_uri: str | None   # models:/NAME@ALIAS
    source: str             # models:/<model_id>: the LoggedModel (MLflow 3)
    size_bytes: int         # of the model's artefacts (adapter, and the backbone when bundled)
    bundled: bool
    model_id: str | None = None  # the MLflow LoggedModel the version points at
    digest: str | None = None    # sha256 of the sealed file set (what `predict --sha256` takes)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = [f"medclipsvd=={medclipsvd.__version__}"]
    for dist in _REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _download(client, run_id: str, path: str, dest: Path) -> Path | None:
    try:
        return Path(client.download_artifacts(run_id, path, str(dest)))
    except Exception:  # MLflow raises different types per artefact store for "no such artefact"
        return None


def _bundle(config: dict, dest: Path, weights: str | None, text_dir: str | None) -> dict[str, str]:
    """Base weights (+ tokenizer files) as artefacts; checks they are the adapter's base."""
    from safetensors.torch import save_file

    from medclipsvd.backbones.openclip_arch import is_source_name
    from medclipsvd.backbones.registry import get_spec
    from medclipsvd.backbones.sources import LOCAL_PREFIX, resolve_files

    overrides = {k: v for k, v in (("weights", weights), ("text_dir", text_dir)) if v}
    backbone = build_backbone(config, overrides=overrides)
    if backbone.fingerprint() != config["backbone"]["fingerprint"]:
        raise store.TrackingError(
            f"--bundle-backbone: the weights found for {config['backbone']['name']} "
            f"({backbone.source}) are not the ones the adapter was trained on (fingerprint "
            f"{backbone.fingerprint()[:12]} vs {config['backbone']['fingerprint'][:12]}); pass --weights with the "
            "training run's weights")
    dest.mkdir(parents=True, exist_ok=True)
    if is_source_name(config["backbone"]["name"]):  # named by its folder / hub id: the whole model, not just weights
        from medclipsvd.backbones.model_folder import save_model_folder

        folder = save_model_folder(backbone, dest / BUNDLE_FOLDER)
        if build_backbone(config, bundle=str(folder)).fingerprint() != config["backbone"]["fingerprint"]:
            raise store.TrackingError(f"--bundle-backbone: the model folder written for {config['backbone']['name']} "
                                      "does not rebuild the adapter's base; please report this")
        return {"backbone": str(folder)}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.model.state_dict().items()}
    save_file(state, str(dest / BUNDLE_WEIGHTS), metadata={"backbone": config["backbone"]["name"],
                                                           "fingerprint": config["backbone"]["fingerprint"]})
    artifacts = {"backbone": str(dest / BUNDLE_WEIGHTS)}
    spec = get_spec(config["backbone"]["name"])
    if spec.tokenizer.kind == "hf-auto" and backbone.tokenizer.hf is not None:  # e.g. open_clip SigLIP's
        backbone.tokenizer.hf.save_pretrained(str(dest / "tokenizer"))
        artifacts["tokenizer"] = str(dest / "tokenizer")
    elif spec.tokenizer.kind == "hf":
        source = LOCAL_PREFIX + text_dir if text_dir else (spec.tokenizer.source or "")
        tok_dir = dest / "tokenizer"
        tok_dir.mkdir(exist_ok=True)
        for fname in spec.tokenizer.files:
            found = resolve_files(source, [fname], what="the text tokenizer",
                                  hint="pass --text-dir with the tokenizer folder")
            shutil.copy2(found, tok_dir / fname)
        artifacts["tokenizer"] = str(tok_dir)
    return artifacts


def _signature(classnames: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), "image"), ColSpec("long", "index", required=False)])
    outputs = Schema([ColSpec("string", "label"), ColSpec("long", "label_index"), ColSpec("double", "score")]
                     + [ColSpec("double", f"prob_{c}") for c in classnames])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example():
    """What a caller sends, without patient data: one synthetic 32x32 grey gradient as an array (file paths
    are the other accepted form, but a path would name a file of whoever trained the model)."""
    import numpy as np
    import pandas as pd

    image = np.tile(np.linspace(0, 255, 32).round().astype(np.uint8), (32, 1))
    return pd.DataFrame({"image": [image.tolist()]})


def _pyfunc_inputs(config: dict, adapter_dir: Path, work: Path, bundle: dict[str, str] | None) -> dict:
    """The arguments of mlflow.pyfunc.save_model / log_model for our model (from code; JSON + safetensors)."""
    config_path = work / MODEL_CONFIG
    config_path.write_text(json.dumps({**config, "bundled_backbone": bool(bundle)}, indent=2))
    artifacts = {"config": str(config_path), "adapter": str(adapter_dir), **(bundle or {})}
    return dict(python_model=str(PYFUNC_CODE), artifacts=artifacts, pip_requirements=_requirements(),
                # MLflow lets a loader override only the keys saved here (load_model(..., model_config=) or
                # MLFLOW_PYFUNC_INFERENCE_CONFIG for `mlflow models serve`); empty means "not set"
                model_config=dict(LOAD_OPTIONS),
                signature=_signature(config["classnames"]), input_example=input_example(),
                metadata={"medclipsvd_backbone": config["backbone"]["name"],
                          "medclipsvd_fingerprint": config["backbone"]["fingerprint"]})


def save_pyfunc(config: dict, adapter_dir: Path, work: Path, bundle: dict[str, str] | None = None) -> Path:
    """Write the MLflow model folder (models from code; artefacts: JSON + safetensors only)."""
    import warnings

    import mlflow

    model_dir = work / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice to add type hints
        mlflow.pyfunc.save_model(str(model_dir), **_pyfunc_inputs(config, adapter_dir, work, bundle))
    seal_model_dir(model_dir)  # sha256 of config + adapter files in MLmodel; no absolute paths
    return model_dir


@dataclass
class RunModel:
    """A run's trained model as an MLflow 3 LoggedModel."""

    model_id: str
    name: str               # "model", or "model-bundled" with the backbone inside
    model_uri: str          # models:/<model_id>
    size_bytes: int
    config: dict
    bundled: bool
    created: bool           # False: the run already had it
    hashes: dict | None = None  # sha256 of config + adapter files, as sealed in MLmodel


@contextlib.contextmanager
def _fluent_uri(uri: str):
    """mlflow.pyfunc.log_model talks to the process-wide tracking URI; point it at ours for the call only."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None: unset (MLflow then also drops MLFLOW_TRACKING_URI)
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _existing_model(client, run, name: str, serve_root: str | None):
    found = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                        filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{name}'",
                                        max_results=50)
    return next((m for m in found if str(m.status).endswith("READY")
                 and (m.tags or {}).get(SERVE_ROOT_TAG) == serve_root), None)


def model_name(bundle_backbone: bool, serve_root: str | None) -> str:
    """The LoggedModel's name in its run (what runs:/RUN_ID/<name> loads)."""
    return "model" + ("-bundled" if bundle_backbone else "") + ("-serve-root" if serve_root else "")


def log_run_model(run_id: str, *, bundle_backbone: bool = False, tracking_uri: str | None = None,
                  weights: str | None = None, text_dir: str | None = None, serve_root: str | None = None,
                  log: Callable[[str], None] | None = None) -> RunModel:
    """Log run `run_id`'s adapter as an MLflow LoggedModel (saved, sealed with the sha256 of its data files,
    uploaded), linked to the run as its output, with a signature and an input example; reuse it if the run
    already has one (with the same serve root). The hashes go to the LoggedModel's and the run's tags."""
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.exceptions import MlflowException

    from medclipsvd.io.safeload import load_json

    log = log or (lambda _msg: None)
    serve_root = check_serve_root(serve_root)  # before anything is logged
    uri = store.resolve_tracking_uri(tracking_uri)
    store.configure_http()
    store.probe(uri)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise store.TrackingError(f"run {run_id!r} is not in the tracking store {store.display_uri(uri)}; check "
                                  "the run ID (MLflow UI or `mlflow runs list`) and --tracking-uri") from None
    from medclipsvd.tracking.registry_checks import check_run_not_deleted

    check_run_not_deleted(run, uri, "logged or registered")
    name = model_name(bundle_backbone, serve_root)
    with tempfile.TemporaryDirectory(prefix="medclipsvd-register-") as tmp:
        work = Path(tmp)
        adapter = _download(client, run_id, "adapter", work / "download")
        results_file = _download(client, run_id, "results.json", work / "download")
        if adapter is None or not adapter.is_dir():
            raise store.TrackingError(f"run {run_id} has no `adapter` artefact: only trained methods (svd, lora, "
                                      "full) can be registered, and the run must have finished logging (if the "
                                      "server was down during training, run `medclipsvd sync` first)")
        try:
            results = load_json(results_file) if results_file else {}  # bounded size and depth
        except (OSError, ValueError) as exc:
            raise store.TrackingError(f"run {run_id}: its results.json artefact is damaged "
                                  f"({getattr(exc, 'problem', exc)}); it cannot be "
                                      "registered — re-run the training") from None
        if not isinstance(results, dict):
            raise store.TrackingError(f"run {run_id}: its results.json artefact is not a JSON object; it cannot "
                                      "be registered — re-run the training")
        config = build_model_config(adapter, results, run_id)
        if serve_root:
            config["serve_root"] = serve_root
        existing = _existing_model(client, run, name, serve_root)
        if existing is not None:
            recorded = (existing.tags or {}).get(HASHES_TAG)
            if recorded:  # runs logged before the run tag existed get it now
                client.set_tag(run_id, run_hashes_tag(name), recorded)
            return RunModel(existing.model_id, name, f"models:/{existing.model_id}",
                            _stored_size(client, existing.model_id), config, bundle_backbone, created=False,
                            hashes=json.loads(recorded) if recorded else None)
        bundle = _bundle(config, work / "bundle", weights, text_dir) if bundle_backbone else None
        size = folder_size(adapter) + sum(folder_size(Path(p)) if Path(p).is_dir() else Path(p).stat().st_size
                                          for p in (bundle or {}).values())
        log(f"logging the model ({size / 1e6:.2f} MB) of run {run_id} as LoggedModel `{name}`")
        # Created with the run's experiment and as the run's output explicitly: the fluent API would take
        # them from a process-wide active run/experiment, which the CLI does not use.
        model = client.create_logged_model(experiment_id=run.info.experiment_id, name=name, source_run_id=run_id,
                                           model_type="medclipsvd",
                                           tags={"medclipsvd.version": medclipsvd.__version__,
                                                 "backbone": config["backbone"]["name"], "method": config["method"],
                                                 **({SERVE_ROOT_TAG: serve_root} if serve_root else {})})
        # Saved and sealed locally (sha256 of the data files in MLmodel, no absolute paths), then uploaded
        # as the LoggedModel's files: what `predict` verifies is exactly what was hashed here.
        try:
            model_dir = save_pyfunc(config, adapter, work, bundle)
            hashes = read_mlmodel(model_dir)[1]
            client.log_model_artifacts(model.model_id, str(model_dir))
            # the trusted records: outside the files, where write access to the artefact store cannot reach
            client.set_logged_model_tags(model.model_id, {HASHES_TAG: hashes_json(hashes)})
            client.set_tag(run_id, run_hashes_tag(name), hashes_json(hashes))
        except Exception:  # e.g. a full disk: the model is marked FAILED, not left PENDING
            with contextlib.suppress(Exception):  # the store may be on that disk too: the first error counts
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return RunModel(model.model_id, name, f"models:/{model.model_id}", _stored_size(client, model.model_id),
                    config, bool(bundle), created=True, hashes=hashes)


def _stored_size(client, model_id: str, path: str | None = None) -> int:
    """Bytes of a LoggedModel's files in the artefact store (MLmodel, code, adapter, ...)."""
    total = 0
    for f in client.list_logged_model_artifacts(model_id, path):
        total += _stored_size(client, model_id, f.path) if f.is_dir else int(f.file_size or 0)
    return total


def register_run(run_id: str, name: str, *, alias: str | None = None, tags: dict[str, str] | None = None,
                 bundle_backbone: bool = False, tracking_uri: str | None = None, weights: str | None = None,
                 text_dir: str | None = None, serve_root: str | None = None,
                 log: Callable[[str], None] | None = None) -> Registration:
    """Register run `run_id` (a `medclipsvd train` run with an adapter/ artefact) as a new version of `name`;
    the version's source is the run's LoggedModel (logged now if the run has none yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from medclipsvd.tracking.registry_checks import check_registry_names

    check_registry_names(name, alias, tags)  # before anything is logged: no half-made registration
    model = log_run_model(run_id, bundle_backbone=bundle_backbone, tracking_uri=tracking_uri, weights=weights,
                          text_dir=text_dir, serve_root=serve_root, log=log)
    uri = store.resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    config = model.config
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="CLIP-SVD σ-adapted vision-language classifier "
                                                         "(medclipsvd)")
    version_tags = {"backbone": config["backbone"]["name"], "backbone_fingerprint": config["backbone"]["fingerprint"],
                    "method": config["method"], "dataset": str(config.get("dataset")),
                    "bundled_backbone": str(model.bundled).lower(), "medclipsvd.version": medclipsvd.__version__,
                    **({HASHES_TAG: hashes_json(model.hashes)} if model.hashes else {}),
                    **{str(k): str(v) for k, v in (tags or {}).items()}}
    with _fluent_uri(uri):  # a database registry resolves models:/<id> through the process-wide URI
        mv = client.create_model_version(name, model.model_uri, run_id=run_id, tags=version_tags,
                                         model_id=model.model_id)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return Registration(name=name, version=str(mv.version), alias=alias, model_uri=f"models:/{name}/{mv.version}",
                        alias_uri=f"models:/{name}@{alias}" if alias else None, source=mv.source,
                        size_bytes=model.size_bytes, bundled=model.bundled, model_id=model.model_id,
                        digest=file_set_digest(model.hashes) if model.hashes else None)
