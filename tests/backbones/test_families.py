"""The model families: `medclipsvd backbones --all` (supported or refused, and why), every open_clip architecture
in exactly one family, and the σ-count table of docs/backbones.md recomputed from the built models."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medclipsvd.backbones.families import FAMILIES, SUPPORTED
from medclipsvd.backbones.openclip_arch import classify, list_openclip_architectures, openclip_model_cfg

DOCS = Path(__file__).resolve().parents[2] / "docs" / "backbones.md"


def _all_rows() -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "medclipsvd", "backbones", "--all", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_backbones_all_lists_every_family_with_status_and_reason():
    rows = {r["family"]: r for r in _all_rows()}
    assert set(rows) == {f.name for f in FAMILIES}
    assert {n for n, r in rows.items() if r["status"] == "supported"} == \
        {"openclip-vit", "timm-bert", "openclip-siglip", "hf-clip", "hf-siglip"}
    for name in ("modified-resnet", "convnext"):
        assert rows[name]["status"] == "refused" and "convolutional" in rows[name]["why"]
    assert "RN50" in rows["modified-resnet"]["open_clip_architectures"]
    assert "convnext_base" in rows["convnext"]["open_clip_architectures"]
    assert "ViT-B-16-SigLIP" in rows["openclip-siglip"]["open_clip_architectures"]
    # every open_clip architecture is in exactly one family
    listed = [a for r in rows.values() for a in r["open_clip_architectures"]]
    assert sorted(listed) == sorted(list_openclip_architectures())


@pytest.mark.parametrize("name, family", [
    ("ViT-B-32", "openclip-vit"), ("ViT-SO400M-14-SigLIP2", "openclip-siglip"), ("RN50x4", "modified-resnet"),
    ("convnext_large_d", "convnext"), ("EVA02-L-14", "timm-other"), ("coca_ViT-L-14", "coca"),
    ("xlm-roberta-base-ViT-B-32", "openclip-hf-text"), ("nllb-clip-large-siglip", "openclip-hf-text"),
    ("ViT-bigG-14-CLIPA", "openclip-other-text"),
])
def test_open_clip_architectures_fall_in_their_family(name, family):
    found, reason = classify(openclip_model_cfg(name))
    assert found == family
    assert (reason is None) == (family in SUPPORTED)


def _doc_rows() -> list[list[str]]:
    text = DOCS.read_text()
    section = text.split("## σ counts of common sizes", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    assert len(rows) >= 10
    return rows


def _shape(cell: str) -> tuple[int, int]:
    layers, width = (int(x.replace(",", "")) for x in cell.split("×"))
    return layers, width


def _meta_open_clip(name: str):
    from medclipsvd.backbones import get_spec
    from medclipsvd.backbones.backbone import Backbone, _build_model
    from medclipsvd.backbones.tokenizers import build_tokenizer

    spec = get_spec(name)
    with torch.device("meta"):
        model = _build_model(spec)
    return Backbone(spec, model, build_tokenizer(spec, random_init=True), "meta")


def _meta_transformers(kind: str, vision: tuple[int, int], text: tuple[int, int]):
    """A CLIPModel / SiglipModel with the row's widths (heads of 64, MLP 4·w), on the meta device."""
    from medclipsvd.backbones.backbone import Backbone, _build_model
    from medclipsvd.backbones.registry import BackboneSpec
    from medclipsvd.backbones.tokenizers import build_tokenizer

    def tower(shape):
        return {"num_hidden_layers": shape[0], "hidden_size": shape[1], "intermediate_size": 4 * shape[1],
                "num_attention_heads": shape[1] // 64}

    model_type = "clip" if "CLIPModel" in kind else "siglip"
    config = {"model_type": model_type, "text_config": tower(text), "vision_config": tower(vision)}
    spec = BackboneSpec(name="doc-row", model_cfg={"hf_config": config},
                        tokenizer={"kind": "openclip-bpe" if model_type == "clip" else "generated-siglip"})
    with torch.device("meta"):
        model = _build_model(spec)
    return Backbone(spec, model, build_tokenizer(spec, random_init=True), "meta")


def _width(bb, tower: str) -> int:
    block = bb.blocks(tower)[0]
    for path in ("attn.qkv", "self_attn.q_proj", "attention.self.query"):
        module = block
        for part in path.split("."):
            module = getattr(module, part, None)
        if module is not None:
            return module.in_features
    return block.attn.embed_dim


def test_the_sigma_table_of_the_docs_is_what_the_code_counts(monkeypatch, tmp_path):
    from medclipsvd.svd.targets import sigma_total

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for model, kind, vision, text, sigma in _doc_rows():
        name = re.findall(r"`([^`]+)`", model)[0]
        vision, text = _shape(vision), _shape(text)
        bb = (_meta_transformers(kind, vision, text) if kind.startswith("transformers")
              else _meta_open_clip(name))
        assert (bb.num_layers("vision"), _width(bb, "vision")) == vision, name
        assert (bb.num_layers("text"), _width(bb, "text")) == text, name
        assert sigma_total(bb) == int(sigma.replace(",", "")), name
