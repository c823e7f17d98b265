"""Share a trained adapter as the Hugging Face ecosystem does (`medclipsvd export --format hf`): the adapter
folder plus a model card, ready for `hf upload ORG/NAME OUT`.

    OUT/adapter_config.json, OUT/adapter.safetensors   the σ adapter, as `medclipsvd train` wrote it
                                                       (LoRA / full baselines: method.json, weights.safetensors)
    OUT/README.md                                      the model card: YAML metadata + base model and revision,
                                                       σ count, training data, metrics with their 95 % intervals,
                                                       how to use it, intended use and limitations

Everything on the card comes from the run's results.json and the adapter's config, nothing is recomputed; the
data root, the output folder and the data's file names are not written (a `local-dir:` base model is named by
its folder, as the adapter names it)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import medclipsvd
from medclipsvd.errors import AdapterError, MedClipSVDError

# the files an adapter folder may hold (σ adapters; the LoRA / full fine-tuning baselines)
ADAPTER_FILES = ("adapter_config.json", "adapter.safetensors", "method.json", "weights.safetensors")
CARD = "README.md"
PERCENT_METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"))
FRACTION_METRICS = (("auroc_ovr", "AUROC (one-vs-rest)"), ("ece", "ECE"))


class CardError(MedClipSVDError):
    """The adapter cannot be exported with a model card as asked."""


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise CardError(f"{path} is missing or unreadable: {what}") from None
    if not isinstance(data, dict):
        raise CardError(f"{path} is not a JSON object: {what}")
    return data


def _adapter_info(adapter: Path) -> dict[str, Any]:
    """method, base {name, source, fingerprint}, σ (or trainable) count and target description. The folder's
    record: a method.json where there is one (LoRA / full folders of earlier versions), else adapter_config.json,
    whose "method" key (absent: σ) names the method."""
    config_file, legacy = adapter / "adapter_config.json", adapter / "method.json"
    record = legacy if legacy.is_file() else config_file
    if not record.is_file():
        raise AdapterError(f"{adapter} is not an adapter folder (no adapter_config.json or method.json); pass the "
                           "adapter/ folder a `medclipsvd train` run wrote under its --output")
    meta = _read_json(record, "the adapter's record")
    if record == config_file and meta.get("method", "svd") == "svd":
        from medclipsvd.svd.adapter_io import read_adapter_config

        config = read_adapter_config(adapter)  # checked as every σ adapter is
        return {"method": "svd", "base": dict(config["backbone"]), "trainable": config.get("trainable_parameters"),
                "preset": config.get("preset"), "targets": config.get("targets"),
                "matrices": len(config.get("target_names") or []), "input": (config.get("extra") or {}).get("input")}
    return {"method": meta.get("method"), "base": {"name": meta.get("backbone"), "source": None,
                                                  "fingerprint": meta.get("fingerprint")},
            "trainable": None, "preset": None, "targets": {k: meta.get(k) for k in ("layers", "matrices")},
            "matrices": None, "input": None}


def hub_revision(source: str | None) -> str | None:
    """The commit of an `hf-hub:` source's files in the local Hugging Face cache, when they are there."""
    if not source or not source.startswith("hf-hub:"):
        return None
    from huggingface_hub import try_to_load_from_cache

    repo = source.removeprefix("hf-hub:").strip("/")
    for name in ("open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.bin",
                 "pytorch_model.bin", "open_clip_config.json", "config.json"):
        try:
            found = try_to_load_from_cache(repo, name)
        except Exception:  # noqa: BLE001 - a malformed id or cache: no revision to report
            return None
        if isinstance(found, str):
            parts = Path(found).parts
            if "snapshots" in parts and parts.index("snapshots") + 1 < len(parts):
                return parts[parts.index("snapshots") + 1]
    return None


def _fmt(value, percent: bool) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} %" if percent else f"{value:.4f}"


def _interval(ci: dict, key: str, percent: bool) -> str:
    bounds = ci.get(key) if isinstance(ci, dict) else None
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and None not in bounds):
        return "not computed"
    return f"{_fmt(bounds[0], percent)} – {_fmt(bounds[1], percent)}"


def metrics_rows(results: dict) -> list[dict[str, Any]]:
    """One row per evaluation split (and its per-study results): the metrics and their 95 % intervals as
    results.json holds them."""
    rows = []
    for split, m in (results.get("eval") or {}).items():
        if not isinstance(m, dict):
            continue
        for label, metrics in ((split, m), (f"{split} (per study)", m.get("study"))):
            if not isinstance(metrics, dict) or "accuracy" not in metrics:
                continue
            ci = metrics.get("ci95") or {}
            row = {"split": label, "n": metrics.get("n"), "ci_method": ci.get("method"),
                   "ci_resamples": ci.get("n_resamples")}
            for key, _ in (*PERCENT_METRICS, *FRACTION_METRICS):
                row[key] = metrics.get(key)
                row[f"{key}_ci95"] = ci.get(key) if isinstance(ci.get(key), list) else None
            rows.append(row)
    return rows


def _front_matter(info: dict, results: dict, revision: str | None, rows: list[dict]) -> str:
    import yaml

    base = info["base"]
    source = base.get("source") or ""
    meta: dict[str, Any] = {"library_name": "medclipsvd", "pipeline_tag": "image-classification",
                            "tags": ["medclipsvd", "clip-svd", "singular-value-fine-tuning", "vision-language",
                                     "medical-imaging", "few-shot", "research-only"]}
    if source.startswith("hf-hub:"):
        meta["base_model"] = source.removeprefix("hf-hub:").strip("/")
    meta["medclipsvd"] = {
        "library_version": medclipsvd.__version__, "method": info["method"], "backbone": base.get("name"),
        "backbone_source": source or None, "backbone_revision": revision,
        "backbone_fingerprint": base.get("fingerprint"), "trainable_parameters": info["trainable"],
        "dataset": results.get("dataset"), "classes": results.get("classnames"),
        "shots": results.get("shots"), "seed": results.get("seed"),
        "results": {r["split"]: {k: v for k, v in r.items() if k != "split"} for r in rows},
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def _revision_text(source: str, revision: str | None) -> str:
    if revision:
        return f"`{revision}` (the commit of the files in the local Hugging Face cache)"
    if source.startswith("random-init:"):
        return "none: seeded random weights"
    return "not recorded; the weight fingerprint below identifies the exact weights"


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(adapter: Path, results: dict, info: dict, revision: str | None) -> str:
    base = info["base"]
    run = results.get("run") or {}
    rows = metrics_rows(results)
    classes = results.get("classnames") or []
    source = base.get("source") or "not recorded"
    name = f"{results.get('dataset') or 'custom'} · {base.get('name')} · {info['method']}"
    lines = [_front_matter(info, results, revision, rows), f"# {name}", ""]
    what = ("a σ-only (CLIP-SVD) adapter: only the singular values of the attention and MLP matrices were trained"
            if info["method"] == "svd" else f"a {info['method']} baseline adapter")
    lines += [f"This folder holds {what}, for the vision-language model `{base.get('name')}`. It is applied on top of "
              "that base model with medclipsvd, which checks the base weights' name and fingerprint before "
              "loading it.", ""]
    if str(base.get("name", "")).startswith("local-dir:"):
        lines += ["The base model was read from a local folder: load it under the same `local-dir:` name, with the "
                  "same weights (the fingerprint below), to apply this adapter.", ""]
    lines += ["## Base model", "", "| | |", "|---|---|", f"| backbone | `{base.get('name')}` |",
              f"| weights | `{source}` |",
              f"| revision | {_revision_text(source, revision)} |",
              f"| weight fingerprint (xxh3-128 of the state dict) | `{base.get('fingerprint')}` |", ""]
    lines += ["## Adapter", "", "| | |", "|---|---|", f"| method | {info['method']} |"]
    if info["trainable"] is not None:
        lines.append(f"| trained σ (singular values) | {info['trainable']:,} in {info['matrices']} matrices |")
    if info["preset"] or info["targets"]:
        lines.append(f"| targets | preset `{info['preset']}`: `{json.dumps(info['targets'])}` |")
    train = results.get("train") or {}
    for key, label in (("steps", "training steps"), ("lr", "learning rate"), ("final_loss", "final loss")):
        if train.get(key) is not None:
            lines.append(f"| {label} | {_number(train[key])} |")
    lines += ["", "## Training data", "", "| | |", "|---|---|",
              f"| dataset | {results.get('dataset') or 'custom'} |",
              f"| protocol | {results.get('protocol') or run.get('protocol') or 'few_shot'} |",
              f"| shots per class | {results.get('shots')} |", f"| seed | {results.get('seed')} |",
              f"| training images | {results.get('n_train')} |",
              f"| prompt template | `{results.get('template') or run.get('template')}` |",
              f"| classes ({len(classes)}, output order) | {', '.join(classes)} |"]
    if info.get("input"):
        lines.append(f"| input handling | `{json.dumps(info['input'])}` |")
    lines += ["", "## Results", "",
              "Accuracy, balanced accuracy and macro F1 in %, AUROC and ECE as fractions; 95 % intervals: "
              f"{(rows[0]['ci_method'] or 'bootstrap') if rows else 'bootstrap'} over the evaluation images "
              f"({rows[0]['ci_resamples'] if rows else '?'} resamples), as recorded in the run's results.json.", "",
              "| split | n | " + " | ".join(f"{label} | 95 % CI" if key != "macro_f1" and key != "ece" else label
                                           for key, label in (*PERCENT_METRICS, *FRACTION_METRICS)) + " |",
              "|---|---|" + "---|" * 8]
    for r in rows:
        cells = [r["split"], str(r["n"])]
        for key, _ in PERCENT_METRICS:
            cells.append(_fmt(r[key], True))
            if key != "macro_f1":
                cells.append(_interval({key: r[f"{key}_ci95"]}, key, True))
        for key, _ in FRACTION_METRICS:
            cells.append(_fmt(r[key], False))
            if key != "ece":
                cells.append(_interval({key: r[f"{key}_ci95"]}, key, False))
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| (no evaluation recorded) | | | | | | | | | |")
    template = results.get("template") or run.get("template")
    lines += ["", "## How to use", "",
              "After `pip install medclipsvd` and `hf download ORG/NAME --local-dir adapter`:", "",
              "```python", "from medclipsvd import api", "",
              f"bb = api.load_backbone({base.get('name')!r})  # the base above; weights=... if it lives elsewhere",
              ("api.merge(api.load_adapter(bb, \"adapter\"))  # refuses other base weights (fingerprint check)"
               if info["method"] == "svd" else "from medclipsvd.methods import load_trained\n"
               "load_trained(bb, \"adapter\")  # applies and merges; refuses other base weights"),
              f"print(api.predict(bb, [\"image.png\"], classnames={list(classes)!r}, template={template!r}))",
              "```", "",
              "## Intended use and limitations", "",
              "- **Research use only. Not a medical device**: not cleared or approved for diagnosis, triage or "
              "any clinical decision, and not validated prospectively.",
              f"- Trained few-shot ({results.get('shots')} per class, seed {results.get('seed')}) on the data above; "
              "the "
              "metrics hold for that evaluation set only and may not transfer to other sites, scanners, protocols or "
              "populations. The intervals reflect sampling of the evaluation images, not the variation between "
              "training seeds or sites.",
              "- It classifies into the classes listed above only; anything else is forced into one of them.",
              "- Inputs must be prepared as in training (the input handling above); the base model's biases carry "
              "over.", ""]
    return "\n".join(lines)


def export_hf(adapter: str | Path, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the adapter files and a model card README.md to `output` (new or empty unless `overwrite`)."""
    adapter, output = Path(adapter), Path(output)
    if not adapter.is_dir():
        raise AdapterError(f"adapter folder {adapter} does not exist; pass the adapter/ folder a `medclipsvd train` "
                           "run wrote under its --output")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise CardError(f"{output} exists and is not empty; choose a new --output or pass --overwrite")
    info = _adapter_info(adapter)
    results = _read_json(adapter.parent / "results.json", "it names the classes, data and metrics of the run; pass the "
                         "adapter/ folder of a `medclipsvd train` output (results.json beside it)")
    card = model_card(adapter, results, info, hub_revision(info["base"].get("source")))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for name in ADAPTER_FILES:
            if (adapter / name).is_file():
                shutil.copyfile(adapter / name, tmp / name)
        (tmp / CARD).write_text(card, encoding="utf-8")
        for path in [tmp, *tmp.iterdir()]:  # mkdtemp is owner-only; a card is for sharing
            path.chmod(0o755 if path.is_dir() else 0o644)
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output
