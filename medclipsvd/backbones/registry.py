"""The backbone registry: one JSON file per backbone in `configs/` (and in the folders of
`MEDCLIPSVD_BACKBONE_DIR`, for your own), read into `BackboneSpec`s.

Adding a backbone means adding a JSON file; no code per backbone. Names that are not registered resolve,
in order, as an open_clip architecture (`ViT-B-32`), or as `hf-hub:ORG/REPO` / `local-dir:DIR` of a model
published in open_clip format (its open_clip_config.json); see `openclip_arch`."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from medclipsvd.backbones import hf_arch, openclip_arch
from medclipsvd.errors import BackboneNotFoundError

CONFIG_DIR = Path(__file__).parent / "configs"
USER_DIR_ENV = "MEDCLIPSVD_BACKBONE_DIR"


class PretrainedSpec(BaseModel):
    source: str
    weight_files: list[str] = openclip_arch.DEFAULT_WEIGHT_FILES


class TokenizerSpec(BaseModel):
    """kind: openclip-bpe (CLIP's BPE, ships with open_clip); hf (a BERT WordPiece folder: vocab.txt);
    hf-auto (any Hugging Face tokenizer read by AutoTokenizer from a folder or hub repository: SigLIP's
    SentencePiece, a CLIPModel folder's own); generated-wordpiece / generated-siglip (small tokenizers built
    from the packaged vocabulary, for tiny test models and random weights offline)."""

    kind: Literal["openclip-bpe", "hf", "hf-auto", "generated-wordpiece", "generated-siglip"]
    source: str | None = None
    files: list[str] = []
    offline_fallback: str | None = None
    clean: Literal["canonicalize", "lower", "whitespace", None] = None
    """Text cleaning before tokenizing, as open_clip's `tokenizer_kwargs.clean` (SigLIP: canonicalize)."""


class PreprocessSpec(BaseModel):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class BackboneSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    family: Literal["openclip-vit", "timm-bert", "openclip-siglip", "hf-clip", "hf-siglip"]
    tiny: bool = False
    model_cfg: dict[str, Any]
    tokenizer: TokenizerSpec
    pretrained: PretrainedSpec | None = None
    preprocess: PreprocessSpec = PreprocessSpec(mean=openclip_arch.OPENAI_MEAN, std=openclip_arch.OPENAI_STD)

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        """Short user files: {"name", "architecture": "ViT-B-16", "pretrained": ...} takes the rest from
        open_clip's config; family and tokenizer follow from model_cfg when not given."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        arch = data.pop("architecture", None)
        if arch is not None and "model_cfg" not in data:
            base = openclip_arch.architecture_spec(arch)
            if base is None:
                raise ValueError(f"architecture {arch!r} is not an open_clip architecture name")
            data = {**base, **data}
        if "model_cfg" in data:
            arch = _arch_module(data["model_cfg"])
            arch.check_supported(data["model_cfg"], repr(data.get("name")))
            data.setdefault("family", arch.family_of(data["model_cfg"]))
            if "tokenizer" not in data and data["family"] == "openclip-vit":
                data["tokenizer"] = {"kind": "openclip-bpe"}
            elif "tokenizer" not in data and data["family"] == "openclip-siglip":
                data["tokenizer"] = openclip_arch.siglip_tokenizer(data["model_cfg"].get("text_cfg", {}))
        return data

    @property
    def image_size(self) -> int:
        if hf_arch.is_hf_config(self.model_cfg):
            return hf_arch.image_size(self.model_cfg)
        return int(self.model_cfg["vision_cfg"]["image_size"])

    @property
    def context_length(self) -> int:
        if hf_arch.is_hf_config(self.model_cfg):
            return hf_arch.context_length(self.model_cfg)
        return int(self.model_cfg["text_cfg"]["context_length"])


def _arch_module(model_cfg: dict[str, Any]):
    """Where the rules for a model_cfg live: transformers configs (hf_config) or open_clip configs."""
    return hf_arch if isinstance(model_cfg, dict) and hf_arch.is_hf_config(model_cfg) else openclip_arch


def _read_spec(path: Path) -> BackboneSpec:
    try:
        return BackboneSpec(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError, openclip_arch.UnsupportedArchitectureError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(first[:3]) if isinstance(exc, ValidationError) else str(exc)
        raise BackboneNotFoundError(f"backbone file {path} is invalid: {detail}. Fields: name, description, and "
                                    "either architecture (an open_clip name) or model_cfg; see docs/backbones.md"
                                    ) from None


def user_dirs() -> list[Path]:
    """The folders of MEDCLIPSVD_BACKBONE_DIR (several separated by the OS path separator)."""
    raw = os.environ.get(USER_DIR_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


@lru_cache(maxsize=8)
def _specs(user: tuple[str, ...] = ()) -> dict[str, BackboneSpec]:
    specs: dict[str, BackboneSpec] = {}
    origin: dict[str, Path] = {}
    files = sorted(CONFIG_DIR.glob("*.json"))
    for folder in map(Path, user):
        if not folder.is_dir():
            raise BackboneNotFoundError(f"{USER_DIR_ENV} names {folder}, which is not a folder; point it at a folder "
                                        "of backbone JSON files (see docs/backbones.md) or unset it")
        files += sorted(folder.glob("*.json"))
    for path in files:
        spec = _read_spec(path)
        if spec.name in specs:
            raise BackboneNotFoundError(f"backbone {spec.name!r} is defined twice: {origin[spec.name]} and {path}; "
                                        "rename one of them")
        specs[spec.name], origin[spec.name] = spec, path
    return specs


def _registered() -> dict[str, BackboneSpec]:
    return _specs(tuple(str(p) for p in user_dirs()))


def list_backbones() -> list[str]:
    """Names of all registered backbones, e.g. ['biomedclip', 'clip-vit-b16', 'tiny-biomedclip', 'tiny-clip',
    'tiny-siglip'],
    plus those of MEDCLIPSVD_BACKBONE_DIR. Any supported open_clip architecture name is accepted as well
    (`openclip_arch.list_openclip_architectures()`)."""
    return sorted(_registered())


@lru_cache(maxsize=32)
def _architecture_spec(name: str) -> BackboneSpec | None:
    fields = openclip_arch.architecture_spec(name)
    return BackboneSpec(**fields) if fields is not None else None


def _dynamic_spec(name: str) -> BackboneSpec | None:
    if openclip_arch.is_source_name(name):  # read each time: the folder or the hub may change
        # open_clip format (open_clip_config.json) or transformers format (config.json of a CLIPModel / SiglipModel)
        path = openclip_arch.model_config_path(name)
        arch = hf_arch if path.name == "config.json" else openclip_arch
        return BackboneSpec(**arch.source_spec(name, path))
    return _architecture_spec(name)


def get_spec(name: str) -> BackboneSpec:
    registered = _registered()
    if name in registered:
        return registered[name]
    spec = _dynamic_spec(name)
    if spec is None:
        raise openclip_arch.not_found(name, sorted(registered))
    return spec
