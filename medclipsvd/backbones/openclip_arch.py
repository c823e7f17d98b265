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
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
# the files of a Hugging Face SentencePiece / BPE tokenizer (AutoTokenizer reads those present)
TOKENIZER_MODELS = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json")
SENTENCEPIECE_FILES = ("tokenizer_config.json", "tokenizer.json", "spiece.model", "tokenizer.model",
                       "special_tokens_map.json")
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
SIGLIP_TINY_VIT = "medclipsvd_tiny_siglip_vit"
BERT_TINY_VIT = "medclipsvd_tiny_vit"


def _refused(name: str, detail: str) -> tuple[str, str]:
    from medclipsvd.backbones.families import family

    return name, f"{detail}; {family(name).why}"


def classify(model_cfg: dict[str, Any]) -> tuple[str, str | None]:
    """(family, None) for a config medclipsvd can adapt; (refused family, what is missing) otherwise. The
    families and their reasons are listed in `families.FAMILIES`."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    timm_name = str(vision.get("timm_model_name") or "")
    hf_text = text.get("hf_model_name") or text.get("hf_text_config")
    if "multimodal_cfg" in model_cfg:
        return _refused("coca", "CoCa")
    if isinstance(vision.get("layers"), (list, tuple)):
        return _refused("modified-resnet", "the image tower is a ModifiedResNet (convolutions, no transformer "
                                           "blocks to σ-adapt)")
    if timm_name.startswith("convnext"):
        return _refused("convnext", f"the image tower is the timm ConvNeXt {timm_name!r}")
    if hf_text and not timm_name:
        return _refused("openclip-hf-text", f"the image tower is an open_clip ViT but the text tower is the "
                                            f"Hugging Face model {hf_text!r}")
    if timm_name and hf_text:
        if "init_logit_bias" in model_cfg or not (timm_name.startswith("vit_") or timm_name == BERT_TINY_VIT):
            return _refused("openclip-hf-text" if timm_name.startswith("vit_") else "timm-other",
                            f"the timm image tower {timm_name!r} is paired with the Hugging Face text model "
                            f"{hf_text!r}")
        return "timm-bert", None
    if timm_name:
        siglip = "siglip" in timm_name or timm_name == SIGLIP_TINY_VIT
        if siglip and text.get("no_causal_mask") and text.get("pool_type") == "last" and not text.get("embed_cls") \
                and not text.get("pad_id"):
            return "openclip-siglip", None
        return _refused("timm-other", f"the image tower is the timm model {timm_name!r} paired with an open_clip "
                                      "text transformer")
    if text.get("no_causal_mask") or text.get("pool_type", "argmax") != "argmax" or text.get("embed_cls") \
            or text.get("hf_tokenizer_name"):
        return _refused("openclip-other-text", "the text transformer has no causal mask, does not pool at the "
                                               "end-of-text token or uses a non-CLIP tokenizer "
                                               f"({text.get('hf_tokenizer_name') or 'CLIPA-style'})")
    for key in ("attentional_pool", "output_tokens"):
        if vision.get(key):
            return _refused("coca", f"the image tower sets {key} (token outputs / attentional pooling)")
    return "openclip-vit", None


def unsupported_reason(model_cfg: dict[str, Any]) -> str | None:
    """None when medclipsvd can adapt this config; otherwise what the architecture has that is not supported."""
    return classify(model_cfg)[1]


def family_of(model_cfg: dict[str, Any]) -> str:
    return classify(model_cfg)[0]


SUPPORTED_SUMMARY = ("open_clip CLIP ViTs (ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14, ... and their -quickgelu variants), "
                     "open_clip SigLIP/SigLIP2 (ViT-B-16-SigLIP, ...), BiomedCLIP-style timm ViT + BERT models, and "
                     "transformers CLIPModel / SiglipModel folders")


def check_supported(model_cfg: dict[str, Any], where: str) -> None:
    reason = unsupported_reason(model_cfg)
    if reason:
        raise UnsupportedArchitectureError(
            f"{where} cannot be σ-adapted by medclipsvd: {reason}. Supported: {SUPPORTED_SUMMARY}; "
            "`medclipsvd backbones --all` lists every family; see docs/backbones.md.")


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
    elif family_of(model_cfg) == "openclip-siglip":
        tokenizer = siglip_tokenizer(text, tokenizer_dir)
    else:
        tokenizer = {"kind": "openclip-bpe"}
    pre = preprocess or {}
    default_mean, default_std = ((SIGLIP_MEAN, SIGLIP_STD) if family_of(model_cfg) == "openclip-siglip"
                                 else (OPENAI_MEAN, OPENAI_STD))
    return {
        "name": name,
        "description": description,
        "family": family_of(model_cfg),
        "model_cfg": model_cfg,
        "tokenizer": tokenizer,
        "pretrained": {"source": pretrained, "weight_files": DEFAULT_WEIGHT_FILES} if pretrained else None,
        "preprocess": {"mean": list(pre.get("mean", default_mean)), "std": list(pre.get("std", default_std))},
    }


def siglip_tokenizer(text_cfg: dict[str, Any], tokenizer_dir: str | None = None) -> dict[str, Any]:
    """The tokenizer of an open_clip SigLIP text tower: the SentencePiece tokenizer of the hub repository its
    config names (a folder of its files when given), text cleaned as the config says (SigLIP: canonicalize,
    i.e. lower case without punctuation). With random weights and no tokenizer here, a generated one stands in."""
    name = text_cfg.get("hf_tokenizer_name")
    source = f"local-dir:{tokenizer_dir}" if tokenizer_dir else (f"hf-hub:{name}" if name else None)
    return {"kind": "hf-auto", "source": source, "files": list(SENTENCEPIECE_FILES),
            "offline_fallback": "generated-siglip",
            "clean": (text_cfg.get("tokenizer_kwargs") or {}).get("clean") or "canonicalize"}


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


MODEL_CONFIG_FILES = ["open_clip_config.json", "config.json"]


def model_config_path(source: str) -> Path:
    from medclipsvd.backbones.sources import resolve_files

    hint = ("A model folder holds open_clip_config.json + open_clip_model.safetensors (open_clip format) or "
            "config.json + model.safetensors (transformers CLIPModel / SiglipModel). Download the repository on a "
            "machine with internet (`hf download ORG/REPO --local-dir DIR`), copy DIR here and use "
            "--backbone local-dir:DIR. A model folder that was moved is named by its new place: --backbone "
            "local-dir:NEW, or --weights local-dir:NEW for the base of a trained adapter (checked by its weights).")
    return resolve_files(source, MODEL_CONFIG_FILES, what=f"the model config of {source}", hint=hint)


def read_model_config(source: str, path: Path | None = None) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(model_cfg, preprocess_cfg, tokenizer folder or None) from the open_clip_config.json of an `hf-hub:ORG/REPO`
    or `local-dir:DIR` model."""
    from medclipsvd.backbones.sources import LOCAL_PREFIX

    path = path or model_config_path(source)
    try:
        data = json.loads(path.read_text())
        model_cfg = data["model_cfg"]
    except (ValueError, KeyError, TypeError):
        raise MedClipSVDError(f"{path} is not an open_clip config (a JSON object with a 'model_cfg' entry); "
                              "check that the repository is published in open_clip format") from None
    tok_dir = None
    if source.startswith(LOCAL_PREFIX) and any((path.parent / f).is_file() for f in ("vocab.txt", *TOKENIZER_MODELS)):
        tok_dir = str(path.parent)
    return model_cfg, data.get("preprocess_cfg") or {}, tok_dir


def source_spec(source: str, path: Path | None = None) -> dict[str, Any]:
    """Spec fields for an open_clip-format model named by where it lives (`hf-hub:ORG/REPO` or `local-dir:DIR`
    with open_clip_config.json; registry.py sends transformers-format folders to hf_arch instead)."""
    model_cfg, preprocess, tok_dir = read_model_config(source, path)
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


def is_model_folder(source: str | None) -> bool:
    """`local-dir:DIR` (or a plain folder path, as a bundled backbone is passed) of a whole model: its config
    beside the weights, not just a weights folder."""
    if not source or source.startswith("hf-hub:"):
        return False
    folder = Path(source.removeprefix("local-dir:")).expanduser()
    return folder.is_dir() and any((folder / f).is_file() for f in MODEL_CONFIG_FILES)


def not_found(name: str, registered: list[str]) -> BackboneNotFoundError:
    return BackboneNotFoundError(
        f"unknown backbone {name!r} (--backbone); registered backbones: {', '.join(registered)}; also accepted: any supported "
        "open_clip architecture name (e.g. ViT-B-32, ViT-L-14, ViT-B-16-SigLIP; `medclipsvd backbones --open-clip` "
        "lists them), hf-hub:ORG/REPO or local-dir:DIR of a model in open_clip format or a transformers CLIPModel / "
        "SiglipModel")
