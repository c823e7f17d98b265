"""The model families medclipsvd knows, supported or refused, and why: one table, read by
`medclipsvd backbones --all`, the refusal messages and docs/backbones.md.

Plain data (no torch, no open_clip), so listing stays instant. Which family a given open_clip config or
Hugging Face config.json belongs to is decided in `openclip_arch.classify` and `hf_arch.classify`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    supported: bool
    what: str
    """The towers, in words."""
    examples: str
    why: str
    """Supported: which matrices get σ and what else differs. Refused: what is missing."""


FAMILIES: tuple[Family, ...] = (
    Family("openclip-vit", True,
           "open_clip CLIP ViT: ViT image tower + causal text transformer pooled at the end-of-text token",
           "ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14, ViT-bigG-14, clip-vit-b16, tiny-clip, "
           "hf-hub:wisdomik/QuiltNet-B-32",
           "q, k, v (rows of attn.in_proj_weight), attn.out_proj, mlp.c_fc, mlp.c_proj of every block; prompts cut "
           "to the longest real prompt (exact under the causal mask)"),
    Family("timm-bert", True,
           "BiomedCLIP-style: timm ViT image tower + Hugging Face BERT text tower",
           "biomedclip, tiny-biomedclip, hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
           "timm attn.qkv split in q, k, v, attn.proj, mlp.fc1, mlp.fc2; BERT query, key, value, "
           "attention.output.dense, "
           "intermediate.dense, output.dense"),
    Family("openclip-siglip", True,
           "SigLIP / SigLIP2 in open_clip: timm SigLIP ViT with an attention-pool (MAP) head + text transformer "
           "without causal mask pooled at its last position; sigmoid-trained, so logits are scale·cos + bias",
           "ViT-B-16-SigLIP, ViT-B-16-SigLIP2, ViT-L-16-SigLIP-256, ViT-SO400M-14-SigLIP, tiny-siglip",
           "the timm blocks as in timm-bert and the open_clip text blocks as in openclip-vit; the attention-pool "
           "head stays frozen (like CLIP's projections); prompts are padded to the full context (the text tower "
           "attends to the padding), never cut; SentencePiece tokenizer of the model's hub repository"),
    Family("hf-clip", True,
           "Hugging Face transformers CLIPModel folders (config.json + model.safetensors): PLIP, PubMedCLIP, "
           "hospital-trained CLIPs",
           "local-dir:DIR, hf-hub:openai/clip-vit-base-patch32, hf-hub:vinid/plip",
           "self_attn.q_proj, k_proj, v_proj, out_proj, mlp.fc1, mlp.fc2 of every encoder layer of both towers; "
           "the folder's tokenizer files, else CLIP's BPE (ships with open_clip)"),
    Family("hf-siglip", True,
           "Hugging Face transformers SiglipModel folders (SigLIP, and fixed-resolution SigLIP2 checkpoints saved "
           "as model_type siglip)",
           "local-dir:DIR, hf-hub:google/siglip-base-patch16-224",
           "as hf-clip; the attention-pool head (vision_model.head) stays frozen; prompts padded to the full "
           "context; the folder's tokenizer files, else the family's SentencePiece tokenizer from the hub"),
    Family("modified-resnet", False, "open_clip ModifiedResNet image towers", "RN50, RN101, RN50x4 … RN50x64",
           "the image tower is convolutional: no transformer blocks, so the q, k, v, o and MLP matrices that "
           "CLIP-SVD adapts do not exist there (only its attention-pool head is attention); adapting the text tower "
           "alone would not be the method"),
    Family("convnext", False, "timm ConvNeXt image towers + open_clip text transformer",
           "convnext_base, convnext_large_d, convnext_xxlarge",
           "the image tower is convolutional (depthwise convolutions + pointwise MLPs): no attention, so there are "
           "no q, k, v, o matrices; σ-adapting only its MLPs would be another method, not CLIP-SVD"),
    Family("timm-other", False,
           "other timm image towers paired with an open_clip text transformer",
           "EVA02-*, PE-Core-*, MobileCLIP-*, ViTamin-*, Swin (swin_*), vit_relpos_*",
           "no target rules for those timm blocks (EVA's SwiGLU MLP and rotary attention, MobileCLIP's FastViT/MCi, "
           "ViTamin's hybrid stages, Swin's windowed attention, relative-position blocks)"),
    Family("coca", False, "CoCa: contrastive + captioning", "coca_ViT-B-32, coca_ViT-L-14",
           "a captioning decoder with cross-attention and an attentional pooler: no target rules for "
           "cross-attention and no contrastive-only forward"),
    Family("openclip-hf-text", False,
           "open_clip ViT image tower + a Hugging Face text tower other than BERT-with-timm-ViT",
           "roberta-ViT-B-32, xlm-roberta-base-ViT-B-32, mt5-*, nllb-clip-*",
           "no target rules for that pairing (only the BiomedCLIP pairing, timm ViT + BERT, is supported)"),
    Family("openclip-other-text", False,
           "open_clip ViT + an open_clip text transformer with a non-CLIP tokenizer",
           "ViT-L-14-CLIPA, ViT-H-14-CLIPA (BERT tokenizer, no causal mask), ViT-L-14-worldwide (mT5 tokenizer), "
           "ViT-H-14-worldwide (XLM-V tokenizer)",
           "the pairing of an open_clip ViT with a BERT, mT5 or XLM-V tokenizer (and, for CLIPA, a text tower without "
           "causal mask pooled at its last token) is not wired up"),
    Family("hf-other", False, "other transformers vision-language models",
           "Siglip2Model (NaFlex), ALIGN, BLIP, ChineseCLIP, Owl-ViT, X-CLIP",
           "no target rules and no forward wrapper for them; only CLIPModel and SiglipModel folders are read"),
)


def family(name: str) -> Family:
    for f in FAMILIES:
        if f.name == name:
            return f
    raise KeyError(name)


SUPPORTED = tuple(f.name for f in FAMILIES if f.supported)
NON_CAUSAL_TEXT = ("openclip-siglip", "hf-siglip")
"""Families whose text tower attends to every position: prompts are padded to the context, never cut."""
