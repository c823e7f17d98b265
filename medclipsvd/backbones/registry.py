"""The backbone registry: one JSON file per backbone in `configs/`, read into `BackboneSpec`s.

Adding a backbone means adding a JSON file; no code per backbone."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from medclipsvd.errors import BackboneNotFoundError

CONFIG_DIR = Path(__file__).parent / "configs"


class PretrainedSpec(BaseModel):
    source: str
    weight_files: list[str]


class TokenizerSpec(BaseModel):
    kind: Literal["openclip-bpe", "hf", "generated-wordpiece"]
    source: str | None = None
    files: list[str] = []
    offline_fallback: str | None = None


class PreprocessSpec(BaseModel):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class BackboneSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    family: Literal["openclip-vit", "timm-bert"]
    tiny: bool = False
    model_cfg: dict[str, Any]
    tokenizer: TokenizerSpec
    pretrained: PretrainedSpec | None = None
    preprocess: PreprocessSpec

    @property
    def image_size(self) -> int:
        return int(self.model_cfg["vision_cfg"]["image_size"])

    @property
    def context_length(self) -> int:
        return int(self.model_cfg["text_cfg"]["context_length"])


@lru_cache(maxsize=None)
def _specs() -> dict[str, BackboneSpec]:
    specs = {}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        spec = BackboneSpec(**json.loads(path.read_text()))
        specs[spec.name] = spec
    return specs


def list_backbones() -> list[str]:
    """Names of all registered backbones, e.g. ['biomedclip', 'clip-vit-b16', 'tiny-biomedclip', 'tiny-clip']."""
    return sorted(_specs())


def get_spec(name: str) -> BackboneSpec:
    try:
        return _specs()[name]
    except KeyError:
        raise BackboneNotFoundError(
            f"unknown backbone {name!r}; registered backbones: {', '.join(list_backbones())} "
            f"(see `medclipsvd backbones`)"
        ) from None
