"""Backbones in Hugging Face transformers format: a `CLIPModel` or `SiglipModel` folder (config.json +
model.safetensors, or a tensor-only pytorch_model.bin) named `local-dir:DIR`, or its hub repository
`hf-hub:ORG/REPO`.

Reads JSON only (no transformers import): the family, image size, context length, normalisation and
tokenizer are decided from config.json, preprocessor_config.json and the tokenizer files present. The model
itself is built by `hf_models` from the config dict stored in the spec (`model_cfg["hf_config"]`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medclipsvd.backbones.openclip_arch import (OPENAI_MEAN, OPENAI_STD, SENTENCEPIECE_FILES, SIGLIP_MEAN,
                                                SIGLIP_STD, TOKENIZER_MODELS, UnsupportedArchitectureError)
from medclipsvd.errors import MedClipSVDError

WEIGHT_FILES = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
MODEL_TYPES = {"clip": "hf-clip", "siglip": "hf-siglip"}
ARCHITECTURES = {"clip": "CLIPModel", "siglip": "SiglipModel"}
DEFAULTS = {  # the transformers config defaults for what a saved config may leave out
    "hf-clip": {"image_size": 224, "context_length": 77, "vocab_size": 49408},
    "hf-siglip": {"image_size": 224, "context_length": 64, "vocab_size": 32000},
}
# The standard SigLIP tokenizers by vocabulary size, for SiglipModel folders saved without tokenizer files
# (e.g. by `SiglipModel.save_pretrained`): T5's English SentencePiece (SigLIP), mT5's (i18n), Gemma's (SigLIP2).
SIGLIP_TOKENIZERS = {32000: "google/siglip-base-patch16-224", 250000: "google/siglip-base-patch16-256-multilingual",
                     256000: "google/siglip2-base-patch16-224"}
HF_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt", "spiece.model",
                      "tokenizer.model", "special_tokens_map.json")


def is_hf_config(model_cfg: dict[str, Any]) -> bool:
    return "hf_config" in model_cfg


def classify(config: dict[str, Any]) -> tuple[str, str | None]:
    """(family, None) for a CLIPModel / SiglipModel config.json; ("hf-other", why) otherwise."""
    from medclipsvd.backbones.families import family

    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        what = f"model_type {model_type!r}" if model_type else "no model_type"
        return "hf-other", (f"the transformers config has {what}; {family('hf-other').why} "
                            f"(model_type {' or '.join(map(repr, MODEL_TYPES))})")
    archs = config.get("architectures") or [ARCHITECTURES[model_type]]
    if ARCHITECTURES[model_type] not in archs:
        return "hf-other", (f"the checkpoint is a {', '.join(map(str, archs))}, not a {ARCHITECTURES[model_type]} "
                            "with both towers (image and text); medclipsvd needs both")
    for key in ("text_config", "vision_config"):
        if not isinstance(config.get(key, {}), dict):
            return "hf-other", f"config.json: {key} is not an object"
    if model_type == "siglip" and config.get("vision_config", {}).get("vision_use_head") is False:
        return "hf-other", "the SigLIP vision tower has no pooling head (vision_use_head false): no image embedding"
    return MODEL_TYPES[model_type], None


def check_supported(model_cfg: dict[str, Any], where: str) -> None:
    family, reason = classify(model_cfg["hf_config"])
    if reason:
        raise UnsupportedArchitectureError(
            f"{where} cannot be σ-adapted by medclipsvd: {reason}. Supported transformers models: CLIPModel and "
            "SiglipModel folders; `medclipsvd backbones --all` lists every family; see docs/backbones.md.")


def family_of(model_cfg: dict[str, Any]) -> str:
    return classify(model_cfg["hf_config"])[0]


def _value(model_cfg: dict[str, Any], tower: str, key: str, default_key: str):
    family = family_of(model_cfg)
    return int(model_cfg["hf_config"].get(tower, {}).get(key, DEFAULTS[family][default_key]))


def image_size(model_cfg: dict[str, Any]) -> int:
    return _value(model_cfg, "vision_config", "image_size", "image_size")


def context_length(model_cfg: dict[str, Any]) -> int:
    return _value(model_cfg, "text_config", "max_position_embeddings", "context_length")


def vocab_size(model_cfg: dict[str, Any]) -> int:
    return _value(model_cfg, "text_config", "vocab_size", "vocab_size")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedClipSVDError(f"{path} cannot be read as JSON ({exc}); {what}") from None
    if not isinstance(data, dict):
        raise MedClipSVDError(f"{path} is not a JSON object; {what}")
    return data


def _preprocess(folder: Path, family: str) -> dict[str, Any]:
    """Mean and std from preprocessor_config.json when the folder has one, else the family's."""
    mean, std = (OPENAI_MEAN, OPENAI_STD) if family == "hf-clip" else (SIGLIP_MEAN, SIGLIP_STD)
    path = folder / "preprocessor_config.json"
    if path.is_file():
        data = _read_json(path, "the image preprocessing config of the model is damaged")
        m, s = data.get("image_mean"), data.get("image_std")
        if isinstance(m, list) and isinstance(s, list) and len(m) == len(s) == 3:
            mean, std = tuple(float(x) for x in m), tuple(float(x) for x in s)
    return {"mean": list(mean), "std": list(std)}


def _tokenizer(source: str, folder: Path, local: bool, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model's own tokenizer files when the folder (or hub repo) has them, else the family's standard one."""
    family = family_of(model_cfg)
    if local:
        present = [f for f in HF_TOKENIZER_FILES if (folder / f).is_file()]
        if any(f in present for f in TOKENIZER_MODELS):
            return {"kind": "hf-auto", "source": source, "files": present,
                    "clean": "canonicalize" if family == "hf-siglip" else None}
    else:  # a hub repository: its tokenizer, when it has one, is found by AutoTokenizer
        if (folder / "tokenizer_config.json").is_file() or any((folder / f).is_file() for f in TOKENIZER_MODELS):
            return {"kind": "hf-auto", "source": source, "files": list(HF_TOKENIZER_FILES),
                    "clean": "canonicalize" if family == "hf-siglip" else None}
    if family == "hf-clip":
        return {"kind": "openclip-bpe"}  # CLIP's BPE vocabulary, shipped with open_clip
    repo = SIGLIP_TOKENIZERS.get(vocab_size(model_cfg))
    return {"kind": "hf-auto", "source": f"hf-hub:{repo}" if repo else None, "files": list(SENTENCEPIECE_FILES),
            "offline_fallback": "generated-siglip", "clean": "canonicalize"}


def source_spec(source: str, config_path: Path) -> dict[str, Any]:
    """Spec fields for a transformers-format model named by where it lives (its config.json at `config_path`)."""
    from medclipsvd.backbones.sources import LOCAL_PREFIX

    config = _read_json(config_path, "the model's config.json is damaged")
    model_cfg = {"hf_config": config}
    family, reason = classify(config)
    if reason:
        raise UnsupportedArchitectureError(
            f"{source} cannot be σ-adapted by medclipsvd: {reason}. Supported transformers models: CLIPModel and "
            "SiglipModel folders; `medclipsvd backbones --all` lists every family; see docs/backbones.md.")
    folder = config_path.parent
    if not source.startswith(LOCAL_PREFIX):  # hub: the small side files, from the cache or the hub
        _fetch_side_files(source)
    v, t = config.get("vision_config", {}), config.get("text_config", {})
    return {
        "name": source,
        "description": (f"transformers {ARCHITECTURES[config['model_type']]} from {source} (vision "
                        f"{v.get('num_hidden_layers', '?')}×{v.get('hidden_size', '?')}, text "
                        f"{t.get('num_hidden_layers', '?')}×{t.get('hidden_size', '?')})"),
        "family": family,
        "model_cfg": model_cfg,
        "tokenizer": _tokenizer(source, folder, source.startswith(LOCAL_PREFIX), model_cfg),
        "pretrained": {"source": source, "weight_files": list(WEIGHT_FILES)},
        "preprocess": _preprocess(folder, family),
    }


def _fetch_side_files(source: str) -> None:
    """Bring preprocessor_config.json and tokenizer_config.json of a hub repository next to its config.json
    (in the Hugging Face cache), when they exist and can be had."""
    from medclipsvd.backbones.sources import resolve_files
    from medclipsvd.errors import WeightsNotAvailableError

    for name in ("preprocessor_config.json", "tokenizer_config.json"):
        try:
            resolve_files(source, [name], what=name, hint="")
        except WeightsNotAvailableError:
            continue
