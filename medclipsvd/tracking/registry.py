"""Registering a trained run as an MLflow model: `register_run(run_id, name, alias=...)`.

The registered model is a pyfunc logged from code (pyfunc_model.py), whose artefacts are the run's adapter
folder and a model_config.json naming the base backbone by registry name and weight fingerprint (plus classes
and prompt template). `bundle_backbone=True` adds the base weights as safetensors (and the tokenizer files of
backbones with a Hugging Face tokenizer) for servers without access to the weights. Versions are promoted
with aliases (`champion`, `challenger`, ...) and described with tags; MLflow's deprecated stages are not used."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import medclipsvd
from medclipsvd.tracking import store
from medclipsvd.tracking.predictor import MODEL_CONFIG, MODEL_FORMAT, build_backbone

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
BUNDLE_WEIGHTS = "backbone.safetensors"
_REQUIREMENTS = ("torch", "torchvision", "open-clip-torch", "timm", "transformers", "safetensors", "pandas",
                 "numpy", "pydicom", "nibabel", "pillow")


@dataclass
class Registration:
    name: str
    version: str
    alias: str | None
    model_uri: str          # models:/NAME/VERSION
    alias_uri: str | None   # models:/NAME@ALIAS
    source: str             # where the model files are in the artefact store
    size_bytes: int         # of the model folder
    bundled: bool


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


def _base_of(adapter_dir: Path, run_info: dict) -> tuple[str, dict]:
    """(method, {name, source, fingerprint}) of the adapter in `adapter_dir`."""
    from medclipsvd.backbones.registry import get_spec
    from medclipsvd.engine.methods import METHOD_FILE
    from medclipsvd.svd.adapter_io import read_adapter_config

    if (adapter_dir / METHOD_FILE).exists():  # LoRA / full fine-tuning baselines
        meta = json.loads((adapter_dir / METHOD_FILE).read_text())
        name = meta["backbone"]
        kwargs = run_info.get("backbone_kwargs") or {}
        spec = get_spec(name)
        if kwargs.get("weights"):
            source = kwargs["weights"]
        elif kwargs.get("random_init") or spec.tiny:
            source = "random-init:seed=0"
        else:
            source = spec.pretrained.source if spec.pretrained else ""
        return meta["method"], {"name": name, "source": source, "fingerprint": meta["fingerprint"]}
    config = read_adapter_config(adapter_dir)
    return "svd", dict(config["backbone"])


def build_model_config(adapter_dir: Path, results: dict, run_id: str) -> dict:
    run_info = results.get("run", {})
    method, base = _base_of(adapter_dir, run_info)
    classnames = results.get("classnames")
    template = results.get("template") or run_info.get("template")
    if not classnames or not template:
        raise store.TrackingError(f"run {run_id}: its results.json names no classes or prompt template, so the "
                                  "model cannot be served; re-run `medclipsvd train` with this medclipsvd version")
    return {"format": MODEL_FORMAT, "format_version": 1, "library_version": medclipsvd.__version__,
            "classnames": list(classnames), "template": template, "backbone": base, "method": method,
            "dataset": results.get("dataset") or run_info.get("dataset"), "shots": results.get("shots"),
            "seed": results.get("seed"), "source_run_id": run_id,
            # how inputs become model images: 3-D -> 2-D settings and MONAI preprocess of the training run
            "view": _view_settings(run_info), "preprocess": list(run_info.get("preprocess") or [])}


def _view_settings(run_info: dict) -> dict:
    from medclipsvd.data.inputs import ViewSettings

    return ViewSettings.from_run(run_info).to_dict()


def _bundle(config: dict, dest: Path, weights: str | None, text_dir: str | None) -> dict[str, str]:
    """Base weights (+ tokenizer files) as artefacts; checks they are the adapter's base."""
    from safetensors.torch import save_file

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
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.model.state_dict().items()}
    dest.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest / BUNDLE_WEIGHTS), metadata={"backbone": config["backbone"]["name"],
                                                           "fingerprint": config["backbone"]["fingerprint"]})
    artifacts = {"backbone": str(dest / BUNDLE_WEIGHTS)}
    spec = get_spec(config["backbone"]["name"])
    if spec.tokenizer.kind == "hf":
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


def save_pyfunc(config: dict, adapter_dir: Path, work: Path, bundle: dict[str, str] | None = None) -> Path:
    """Write the MLflow model folder (models from code; artefacts: JSON + safetensors only)."""
    import warnings

    import mlflow

    config_path = work / MODEL_CONFIG
    config_path.write_text(json.dumps({**config, "bundled_backbone": bool(bundle)}, indent=2))
    artifacts = {"config": str(config_path), "adapter": str(adapter_dir), **(bundle or {})}
    model_dir = work / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice to add type hints / an input example
        mlflow.pyfunc.save_model(str(model_dir), python_model=str(PYFUNC_CODE), artifacts=artifacts,
                                 pip_requirements=_requirements(), signature=_signature(config["classnames"]),
                                 metadata={"medclipsvd_backbone": config["backbone"]["name"],
                                           "medclipsvd_fingerprint": config["backbone"]["fingerprint"]})
    return model_dir


def register_run(run_id: str, name: str, *, alias: str | None = None, tags: dict[str, str] | None = None,
                 bundle_backbone: bool = False, tracking_uri: str | None = None, weights: str | None = None,
                 text_dir: str | None = None, log: Callable[[str], None] | None = None) -> Registration:
    """Register run `run_id` (a `medclipsvd train` run with an adapter/ artefact) as a new version of `name`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    log = log or (lambda _msg: None)
    uri = store.resolve_tracking_uri(tracking_uri)
    store.configure_http()
    store.probe(uri)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise store.TrackingError(f"run {run_id!r} is not in the tracking store {store.display_uri(uri)}; check "
                                  "the run ID (MLflow UI or `mlflow runs list`) and --tracking-uri") from None
    with tempfile.TemporaryDirectory(prefix="medclipsvd-register-") as tmp:
        work = Path(tmp)
        adapter = _download(client, run_id, "adapter", work / "download")
        results_file = _download(client, run_id, "results.json", work / "download")
        if adapter is None or not adapter.is_dir():
            raise store.TrackingError(f"run {run_id} has no `adapter` artefact: only trained methods (svd, lora, "
                                      "full) can be registered, and the run must have finished logging (if the "
                                      "server was down during training, run `medclipsvd sync` first)")
        results = json.loads(results_file.read_text()) if results_file else {}
        config = build_model_config(adapter, results, run_id)
        bundle = _bundle(config, work / "bundle", weights, text_dir) if bundle_backbone else None
        model_dir = save_pyfunc(config, adapter, work, bundle)
        size = folder_size(model_dir)
        artifact_path = "model-bundled" if bundle else "model"
        log(f"logging the model ({size / 1e6:.2f} MB) to run {run_id} as `{artifact_path}`")
        client.log_artifacts(run_id, str(model_dir), artifact_path)
    source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="CLIP-SVD σ-adapted vision-language classifier "
                                                         "(medclipsvd)")
    version_tags = {"backbone": config["backbone"]["name"], "backbone_fingerprint": config["backbone"]["fingerprint"],
                    "method": config["method"], "dataset": str(config.get("dataset")),
                    "bundled_backbone": str(bool(bundle)).lower(), "medclipsvd.version": medclipsvd.__version__,
                    **{str(k): str(v) for k, v in (tags or {}).items()}}
    mv = client.create_model_version(name, source, run_id=run_id, tags=version_tags)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return Registration(name=name, version=str(mv.version), alias=alias, model_uri=f"models:/{name}/{mv.version}",
                        alias_uri=f"models:/{name}@{alias}" if alias else None, source=source, size_bytes=size,
                        bundled=bool(bundle))
