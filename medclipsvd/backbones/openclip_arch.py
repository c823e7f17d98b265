"""Backbones described by open_clip model configs: architecture names (`ViT-B-32`, `ViT-L-14`, ...), the
`open_clip_config.json` of `hf-hub:ORG/REPO` and `local-dir:DIR` models, and open_clip pretrained tags.

Everything here reads JSON only: open_clip's own config folder is found without importing open_clip (which
imports torch), so listing and checking architectures stays instant. Whether an architecture is supported is
decided from its config, with a message naming what is missing when it is not; the adapted matrices are
then found in the built model (`architectures.discover_layouts`)."""
from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from medclipsvd.errors import BackboneNotFoundError, MedClipSVDError, WeightsNotAvailableError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_WEIGHT_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
# BERT text towers whose config ships with the package (hf_text/), so they build offline
PACKAGED_TEXT_CONFIGS = {
    "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract": "biomedbert-base",
    "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract": "biomedbert-base",
}


class UnsupportedArchitectureError(MedClipSVDError):
    """The model exists but its layers have no σ target rules (yet)."""


# -- open_clip's architecture configs -------------------------------------------------------------
@lru_cache(maxsize=1)
def openclip_config_dir() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model_configs"
    return path if path.is_dir() else None


@lru_cache(maxsize=1)
def _openclip_configs() -> dict[str, dict[str, Any]]:
    folder = openclip_config_dir()
    out = {}
    for path in sorted(folder.glob("*.json")) if folder else []:
        cfg = json.loads(path.read_text())
        if all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            out[path.stem] = cfg
    return out


def list_openclip_architectures() -> list[str]:
    return list(_openclip_configs())


def openclip_model_cfg(name: str) -> dict[str, Any] | None:
    cfg = _openclip_configs().get(name)
    return json.loads(json.dumps(cfg)) if cfg is not None else None  # a private copy


# -- what is supported ------------------------------------------------------------------------------
def unsupported_reason(model_cfg: dict[str, Any]) -> str | None:
    """None when medclipsvd can adapt this config; otherwise what the architecture has that is not supported."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if "multimodal_cfg" in model_cfg:
        return ("CoCa: a captioning decoder with cross-attention and an attentional pooler; missing: target "
                "rules for cross-attention layers and a contrastive-only forward")
    if isinstance(vision.get("layers"), (list, tuple)):
        return "the image tower is a ModifiedResNet (convolutions, no transformer blocks to σ-adapt)"
    hf_text = text.get("hf_model_name") or text.get("hf_text_config")
    if "init_logit_bias" in model_cfg:
        return ("SigLIP: sigmoid loss with a logit bias, a text tower pooled at its last token without a causal "
                "mask and a SentencePiece tokenizer; missing: prompt handling for non-causal text towers "
                "and the SigLIP tokenizer")
    timm_name = vision.get("timm_model_name")
    if timm_name and not hf_text:
        return (f"the image tower is the timm model {timm_name!r} paired with an open_clip text transformer "
                "(EVA, PE, MobileCLIP, ViTamin, ConvNeXt and Swin families); missing: target rules for this "
                "pairing (medclipsvd adapts open_clip ViT towers, and timm ViT towers paired with a BERT text "
                "tower as in BiomedCLIP)")
    if hf_text and not timm_name:
        return (f"the image tower is an open_clip ViT but the text tower is the Hugging Face model "
                f"{hf_text!r}; missing: target rules for this pairing (HF text towers are supported with a timm "
                "ViT image tower, as in BiomedCLIP)")
    if timm_name and hf_text:
        if not str(timm_name).startswith("vit_") and timm_name != "medclipsvd_tiny_vit":
            return (f"the timm image tower {timm_name!r} is not a plain ViT; missing: target rules for its blocks "
                    "(medclipsvd adapts timm ViT blocks with attn.qkv, attn.proj, mlp.fc1, mlp.fc2)")
        return None
    if text.get("no_causal_mask") or text.get("pool_type", "argmax") != "argmax" or text.get("embed_cls"):
        return ("the text transformer has no causal mask or does not pool at the end-of-text token (CLIPA, "
                "MobileCLIP-style text); missing: prompt handling for such text towers")
    if text.get("hf_tokenizer_name"):
        return (f"the text tower uses the Hugging Face tokenizer {text['hf_tokenizer_name']!r}; missing: support "
                "for non-CLIP tokenizers in open_clip text transformers")
    for key in ("attentional_pool", "output_tokens"):
        if vision.get(key):
            return f"the image tower sets {key}; missing: support for token outputs / attentional pooling"
    return None


def family_of(model_cfg: dict[str, Any]) -> str:
    return "timm-bert" if model_cfg.get("vision_cfg", {}).get("timm_model_name") else "openclip-vit"


def check_supported(model_cfg: dict[str, Any], where: str) -> None:
    reason = unsupported_reason(model_cfg)
    if reason:
        raise UnsupportedArchitectureError(
            f"{where} cannot be σ-adapted by medclipsvd: {reason}. Supported: open_clip CLIP ViTs (ViT-B-32, "
            "ViT-B-16, ViT-L-14, ViT-H-14, ... and their -quickgelu variants) and BiomedCLIP-style timm ViT + BERT "
            "models; see docs/backbones.md.")


# -- trainable σ computed from the config -------------------------------------------------------------
def sigma_count(model_cfg: dict[str, Any]) -> dict[str, int]:
    """σ parameters of the paper preset (q, k, v, o and both MLP matrices of every block of both towers),
    from the widths of an open_clip ViT config: per block 4·w + 2·min(w, h) with h = int(w·mlp_ratio)."""
    if family_of(model_cfg) != "openclip-vit":
        raise ValueError("sigma_count computes open_clip ViT towers only")
    out = {}
    for tower, key in (("vision", "vision_cfg"), ("text", "text_cfg")):
        cfg = model_cfg[key]
        width, layers = int(cfg["width"]), int(cfg["layers"])
        hidden = int(width * float(cfg.get("mlp_ratio", 4.0)))
        out[tower] = layers * (4 * width + 2 * min(width, hidden))
    out["total"] = out["vision"] + out["text"]
    return out


# -- specs ----------------------------------------------------------------------------------------------
def spec_dict(name: str, model_cfg: dict[str, Any], *, description: str, preprocess: dict | None = None,
              pretrained: str | None = None, tokenizer_dir: str | None = None) -> dict[str, Any]:
    """Fields of a BackboneSpec for an open_clip model config (checked for support first)."""
    check_supported(model_cfg, name)
    model_cfg = {k: v for k, v in model_cfg.items() if k not in ("custom_text",)}
    text = model_cfg["text_cfg"]
    if family_of(model_cfg) == "timm-bert":
        hf_name = text.get("hf_model_name")
        if hf_name in PACKAGED_TEXT_CONFIGS:
            text = {k: v for k, v in text.items() if k not in ("hf_model_name", "hf_model_pretrained")}
            text["hf_text_config"] = PACKAGED_TEXT_CONFIGS[hf_name]
            model_cfg["text_cfg"] = text
        tok_name = text.get("hf_tokenizer_name") or hf_name
        source = f"local-dir:{tokenizer_dir}" if tokenizer_dir else (f"hf-hub:{tok_name}" if tok_name else None)
        tokenizer = {"kind": "hf", "source": source, "files": ["vocab.txt", "tokenizer_config.json"],
                     "offline_fallback": "generated-wordpiece"}
    else:
        tokenizer = {"kind": "openclip-bpe"}
    pre = preprocess or {}
    return {
        "name": name,
        "description": description,
        "family": family_of(model_cfg),
        "model_cfg": model_cfg,
        "tokenizer": tokenizer,
        "pretrained": {"source": pretrained, "weight_files": DEFAULT_WEIGHT_FILES} if pretrained else None,
        "preprocess": {"mean": list(pre.get("mean", OPENAI_MEAN)), "std": list(pre.get("std", OPENAI_STD))},
    }


def architecture_spec(name: str) -> dict[str, Any] | None:
    """Spec fields for an open_clip architecture name (no weights: they come from a tag or --weights)."""
    cfg = openclip_model_cfg(name)
    if cfg is None:
        return None
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    shape = (f"vision {v.get('layers')}×{v.get('width')}, text {t.get('layers')}×{t.get('width')}"
             if family_of(cfg) == "openclip-vit" else "")
    return spec_dict(name, cfg, description=f"open_clip architecture {name} ({shape}); weights from a pretrained "
                                            "tag, hf-hub:, local-dir: or a file")


def read_model_config(source: str) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(model_cfg, preprocess_cfg, tokenizer folder or None) from the open_clip_config.json of an `hf-hub:ORG/REPO`
    or `local-dir:DIR` model."""
    from medclipsvd.backbones.sources import LOCAL_PREFIX, resolve_files

    hint = ("Download the repository on a machine with internet (`hf download ORG/REPO --local-dir DIR`), copy "
            "DIR here and use --backbone local-dir:DIR.")
    path = resolve_files(source, ["open_clip_config.json"], what=f"the model config of {source}", hint=hint)
    try:
        data = json.loads(path.read_text())
        model_cfg = data["model_cfg"]
    except (ValueError, KeyError, TypeError):
        raise MedClipSVDError(f"{path} is not an open_clip config (a JSON object with a 'model_cfg' entry); "
                              "check that the repository is published in open_clip format") from None
    tok_dir = None
    if source.startswith(LOCAL_PREFIX) and (path.parent / "vocab.txt").is_file():
        tok_dir = str(path.parent)
    return model_cfg, data.get("preprocess_cfg") or {}, tok_dir


def source_spec(source: str) -> dict[str, Any]:
    """Spec fields for a backbone named by where it lives: `hf-hub:ORG/REPO` or `local-dir:DIR`."""
    model_cfg, preprocess, tok_dir = read_model_config(source)
    return spec_dict(source, model_cfg, description=f"open_clip model from {source}", preprocess=preprocess,
                     pretrained=source, tokenizer_dir=tok_dir)


# -- pretrained tags -------------------------------------------------------------------------------------
def pretrained_tag(arch: str, tag: str) -> dict[str, Any] | None:
    """open_clip's record for `arch`/`tag` (None if open_clip does not know the tag)."""
    from open_clip.pretrained import get_pretrained_cfg

    return get_pretrained_cfg(arch, tag) or None


def tag_source(arch: str, tag: str) -> tuple[str, list[str], dict[str, Any]]:
    """(hf-hub source, weight files, tag record) of an open_clip pretrained tag."""
    record = pretrained_tag(arch, tag)
    if record is None:
        from open_clip.pretrained import list_pretrained_tags_by_model

        tags = list_pretrained_tags_by_model(arch)
        raise WeightsNotAvailableError(
            f"{tag!r} is neither a weights location nor an open_clip pretrained tag of {arch}; tags of {arch}: "
            f"{', '.join(tags) or 'none'}. Other sources: hf-hub:ORG/REPO, local-dir:DIR or a .safetensors file.")
    hub = (record.get("hf_hub") or "").strip()
    if not hub:
        raise WeightsNotAvailableError(
            f"open_clip publishes {arch}/{tag} only at {record.get('url') or 'an unknown URL'} (not on the Hugging "
            "Face hub); download it, convert it to safetensors if it is a pickle, and pass --weights FILE.")
    parts = hub.strip("/").split("/")  # "ORG/REPO/" or "ORG/REPO/FILE"
    files = ["/".join(parts[2:])] if len(parts) > 2 else DEFAULT_WEIGHT_FILES
    return f"hf-hub:{'/'.join(parts[:2])}", files, record


def missing_weights_message(arch: str) -> str:
    from open_clip.pretrained import list_pretrained_tags_by_model

    tags = list_pretrained_tags_by_model(arch)
    return (f"{arch} is an open_clip architecture without default weights: pass --weights TAG (open_clip tags of "
            f"{arch}: {', '.join(tags) or 'none'}), hf-hub:ORG/REPO, local-dir:DIR or a .safetensors file "
            "(Python: load_backbone(name, weights=...)); for architecture-only checks use --random-init.")


def is_source_name(name: str) -> bool:
    return name.startswith(("hf-hub:", "local-dir:"))


def not_found(name: str, registered: list[str]) -> BackboneNotFoundError:
    return BackboneNotFoundError(
        f"unknown backbone {name!r} (--backbone); registered backbones: {', '.join(registered)}; also accepted: "
        "any supported open_clip architecture name (e.g. ViT-B-32, ViT-L-14; `medclipsvd backbones --open-clip` lists them), "
        "hf-hub:ORG/REPO or local-dir:DIR of a model published in open_clip format")
