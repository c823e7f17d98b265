"""THE reader of a `medclipsvd train` output folder (results.json + adapter/), and of the model
configuration built from it, for everything that serves a trained model: `predict --adapter`, `register`,
`export monai-bundle`, the MLflow pyfunc. Only JSON and safetensors are read; the adapter is loaded onto the
base backbone it was made from and merged once (`load_trained_backbone`).

A model configuration (model_config.json) names the base backbone by registry name, weight source and
fingerprint, the classes and prompt template, and how inputs become model images (3-D -> 2-D view settings,
allow-listed MONAI preprocess)."""
from __future__ import annotations

import os
from pathlib import Path

import medclipsvd
from medclipsvd.backbones.openclip_arch import is_source_name
from medclipsvd.errors import AdapterError, FileFormatError, MedClipSVDError, TrackingError

MODEL_CONFIG = "model_config.json"
MODEL_FORMAT = "medclipsvd.registered-model"


def load_model_config(path: str | os.PathLike) -> dict:
    """model_config.json, its MONAI preprocess checked against the allow-list (before anything is built)."""
    from medclipsvd.io.safeload import load_json

    path = Path(path)
    try:
        config = load_json(path)
    except FileFormatError as exc:
        raise MedClipSVDError(f"{path}: cannot read the model configuration ({exc.problem})") from None
    except OSError as exc:
        raise MedClipSVDError(f"{path}: cannot read the model configuration ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise MedClipSVDError(f"{path} is not a medclipsvd model configuration (format {found!r})")
    check_labels(config.get("classnames"), config.get("template"), path)
    return _checked_preprocess(config, path)


def check_labels(classnames, template, source) -> None:
    """The classes and prompt template a served model reads from a file: at least two class names that a
    reader can tell apart, and a template with exactly one ``{}``. Both are data written by `train`; a file
    edited by hand could otherwise make every image one class with probability 1 (one class), split one
    probability between two equal names, or reach object attributes through ``str.format``
    (``{0.__class__}``). One line naming ``source``."""
    from medclipsvd.data.classnames import skeleton
    from medclipsvd.engine.config import check_template

    fix = "restore the file from the training run (or retrain)"
    if not isinstance(classnames, list) or not all(isinstance(c, str) and c.strip() for c in classnames):
        raise AdapterError(f"{source}: 'classnames' must be a list of non-empty class names, found "
                           f"{_short(classnames)}; {fix}")
    if len(classnames) < 2:
        raise AdapterError(f"{source}: 'classnames' lists {len(classnames)} class(es); a classifier needs at least "
                           f"two (one class gets probability 1 for every image); {fix}")
    seen: dict[str, str] = {}
    for c in classnames:
        other = seen.setdefault(skeleton(c), c)
        if other is not c:
            raise AdapterError(f"{source}: 'classnames' lists {other!r} and {c!r}, which a reader cannot tell "
                               f"apart (they would split one probability); {fix}")
    if not isinstance(template, str):
        raise AdapterError(f"{source}: 'template' must be a prompt template string such as 'a photo of a {{}}.', "
                           f"found {_short(template)}; {fix}")
    try:
        check_template(template)
    except ValueError as exc:
        raise AdapterError(f"{source}: {exc}; {fix}") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checked_preprocess(config: dict, source) -> dict:
    """``config`` with its `preprocess` list checked against the allow-list (one line naming ``source``
    and the step otherwise) and normalised."""
    from medclipsvd.data.preprocess_steps import validate_steps

    config["preprocess"] = validate_steps(config.get("preprocess") or [], source=str(source))
    return config


def build_backbone(config: dict, bundle: str | None = None, tokenizer_dir: str | None = None,
                   overrides: dict | None = None):
    """The base backbone the adapter was made from. Order: bundled weights; `overrides` (weights=,
    text_dir=, e.g. from the pyfunc's model_config or the MEDCLIPSVD_BACKBONE_WEIGHTS / MEDCLIPSVD_TEXT_DIR
    environment variables); seeded random weights for `random-init:` sources; the recorded weight source."""
    from medclipsvd.backbones import load_backbone

    base = config["backbone"]
    overrides = dict(overrides or {})
    weights = overrides.get("weights") or os.environ.get("MEDCLIPSVD_BACKBONE_WEIGHTS")
    text_dir = overrides.get("text_dir") or os.environ.get("MEDCLIPSVD_TEXT_DIR") or tokenizer_dir
    kw = {"text_dir": text_dir} if text_dir else {}
    source = str(base.get("source") or "")
    if bundle:
        return load_backbone(base["name"], weights=bundle, **kw)
    if weights:
        return load_backbone(base["name"], weights=weights, **kw)
    if source.startswith("random-init:"):
        seed = int(source.partition("seed=")[2] or 0)
        return load_backbone(base["name"], random_init=True, seed=seed, **kw)
    return load_backbone(base["name"], weights=source or None, **kw)


def _base_of(adapter_dir: Path, run_info: dict) -> tuple[str, dict]:
    """(method, {name, source, fingerprint}) of the adapter in `adapter_dir`."""
    from medclipsvd.backbones.registry import get_spec
    from medclipsvd.methods.adapter_folder import read_method, record_path
    from medclipsvd.svd.adapter_io import read_adapter_config

    method, meta = read_method(adapter_dir)
    if meta is not None:  # LoRA / full fine-tuning baselines
        from medclipsvd.methods.registry import REGISTRY

        known = REGISTRY.get(method) if isinstance(method, str) else None
        if known is None or not known.trained or known.name == "svd":  # named first: the record's key field
            shown = repr(method) if len(repr(method)) <= 60 else repr(method)[:57] + "..."
            raise AdapterError(f"{record_path(adapter_dir)}: unknown method {shown}; a LoRA / full adapter folder "
                               "names lora or full here: the file is damaged or was edited, restore it or retrain")
        if not all(isinstance(meta.get(k), str) for k in ("method", "backbone", "fingerprint")):
            raise AdapterError(f"{record_path(adapter_dir)}: fields 'method', 'backbone' and 'fingerprint' are "
                               "missing or of the wrong type; the file is damaged or was edited")
        name = meta["backbone"]
        kwargs = run_info.get("backbone_kwargs") or {}
        spec = None if is_source_name(name) else get_spec(name)  # a model folder is not read: it may have moved
        if kwargs.get("weights"):
            source = kwargs["weights"]
        elif kwargs.get("random_init") or (spec is not None and spec.tiny):
            source = "random-init:seed=0"
        else:
            source = name if spec is None else (spec.pretrained.source if spec.pretrained else "")
        return meta["method"], {"name": name, "source": source, "fingerprint": meta["fingerprint"]}
    config = read_adapter_config(adapter_dir)
    return "svd", dict(config["backbone"])


def build_model_config(adapter_dir: Path, results: dict, run_id: str) -> dict:
    run_info = results.get("run", {})
    method, base = _base_of(adapter_dir, run_info)
    classnames = results.get("classnames")
    template = results.get("template") or run_info.get("template")
    if not classnames or not template:
        raise TrackingError(f"run {run_id}: its results.json names no classes or prompt template, so the "
                                  "model cannot be served; re-run `medclipsvd train` with this medclipsvd version")
    check_labels(classnames, template, "results.json" if run_id == "local" else f"run {run_id}'s results.json")
    return {"format": MODEL_FORMAT, "format_version": 1, "library_version": medclipsvd.__version__,
            "classnames": list(classnames), "template": template, "backbone": base, "method": method,
            "dataset": results.get("dataset") or run_info.get("dataset"), "shots": results.get("shots"),
            "seed": results.get("seed"), "source_run_id": run_id,
            # how inputs become model images: 3-D -> 2-D settings and MONAI preprocess of the training run
            "view": _view_settings(run_info), "preprocess": _allowed_preprocess(run_info, run_id)}


def _allowed_preprocess(run_info: dict, run_id: str) -> list:
    """The run's MONAI preprocess, checked against the allow-list: a model is never registered with a step
    that could name code."""
    from medclipsvd.data.preprocess_steps import validate_steps

    where = "results.json" if run_id == "local" else f"run {run_id}'s results.json"
    return validate_steps(run_info.get("preprocess") or [], source=where)


def _view_settings(run_info: dict) -> dict:
    from medclipsvd.data.volumes.policy import InputPolicy

    return InputPolicy.from_run(run_info).to_dict()


def local_model_config(adapter_dir: str | os.PathLike, **view_overrides) -> dict:
    """A model configuration (what `register` stores) from a local train output: the adapter folder and
    the results.json `medclipsvd train` wrote next to it (class names, prompt template, 3-D -> 2-D settings,
    MONAI preprocess). view_overrides (slices=, window=, axis=) replace the recorded settings."""
    from medclipsvd.data.volumes.policy import InputPolicy

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterError(f"adapter folder {adapter_dir} does not exist; pass the adapter/ folder that "
                           "`medclipsvd train` wrote under its --output")
    results_file = adapter_dir.parent / "results.json"
    results = read_results(results_file)
    run_info = results.get("run") if isinstance(results.get("run"), dict) else {}
    check_labels(results.get("classnames"), results.get("template") or run_info.get("template"), results_file)
    if isinstance(results.get("run"), dict):  # checked before anything is built from it
        _checked_preprocess(results["run"], results_file)
    config = build_model_config(adapter_dir, results, "local")
    config["view"] = InputPolicy.from_run(results.get("run"), **view_overrides).to_dict()
    return config


def read_results(results_file: Path) -> dict:
    """The results.json `medclipsvd train` wrote beside an adapter, as a dict (UTF-8, bounded size and
    depth), or one AdapterError saying what to pass instead."""
    from medclipsvd.io.safeload import load_json

    try:
        results = load_json(results_file)
    except FileFormatError as exc:
        raise AdapterError(f"{results_file} is unreadable ({exc.problem}): it names the classes and the prompt "
                           "the adapter was trained with; restore it from the run's MLflow artefacts or retrain")\
            from None
    except OSError:
        results = None
    if not isinstance(results, dict):
        raise AdapterError(f"{results_file} is missing or unreadable: it names the classes and the prompt the "
                           "adapter was trained with; pass the adapter/ folder of a `medclipsvd train` output "
                           "(results.json beside it)")
    return results


def load_trained_backbone(config: dict, adapter_dir: str | os.PathLike, bundle: str | None = None,
                          tokenizer_dir: str | None = None, overrides: dict | None = None):
    """(backbone, method): the base backbone of `config` with the adapter in `adapter_dir` loaded and merged
    (AdapterMismatchError, one line, for other base weights)."""
    from medclipsvd.methods.registry import load_merged

    backbone = build_backbone(config, bundle, tokenizer_dir, overrides)
    return backbone, load_merged(backbone, adapter_dir)
