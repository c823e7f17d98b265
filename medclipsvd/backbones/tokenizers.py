"""Prompt tokenizers that cut the batch to its longest real prompt.

What follows the end token changes nothing (CLIP's text mask is causal and pools at the end token; BERT
masks padding), so encoding `[C, longest]` instead of `[C, context_length]` gives the same embeddings at a
fraction of the cost: with 256-token BiomedCLIP prompts that is most of the text tower's work."""
from __future__ import annotations

from pathlib import Path

import torch

from medclipsvd.backbones.registry import BackboneSpec
from medclipsvd.backbones.sources import LOCAL_PREFIX, resolve_files
from medclipsvd.errors import WeightsNotAvailableError

GENERATED_VOCAB = Path(__file__).parent / "wordpiece-vocab.txt"


class PromptTokenizer:
    """Callable: list of prompts -> LongTensor [n, L] with L the longest real prompt (`cut=False`: L = context)."""

    def __init__(self, encode, context_length: int, pad_id: int, name: str):
        self._encode = encode
        self.context_length = context_length
        self.pad_id = pad_id
        self.name = name

    def __call__(self, texts: list[str] | str, cut: bool = True) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        tokens = self._encode(list(texts))
        if not cut:
            return tokens
        real = (tokens != self.pad_id).int()
        # last non-pad position + 1; every prompt keeps at least its start and end tokens
        lengths = real.shape[1] - real.flip(1).argmax(dim=1)
        return tokens[:, : int(lengths.max())].contiguous()


def _openclip_bpe(context_length: int) -> PromptTokenizer:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    return PromptTokenizer(lambda texts: tok(texts), context_length, pad_id=0, name="openclip-bpe")


def _hf(tokenizer, context_length: int, name: str) -> PromptTokenizer:
    def encode(texts: list[str]) -> torch.Tensor:
        out = tokenizer(texts, padding="max_length", truncation=True, max_length=context_length,
                        return_tensors="pt")
        return out["input_ids"].long()

    return PromptTokenizer(encode, context_length, pad_id=int(tokenizer.pad_token_id), name=name)


def _generated_wordpiece(context_length: int) -> PromptTokenizer:
    # Built from `tokenizers` parts so it behaves the same across transformers 4.x and 5.x.
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(GENERATED_VOCAB.read_text().split("\n")) if w}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return _hf(tok, context_length, name="generated-wordpiece")


def build_tokenizer(spec: BackboneSpec, text_dir: str | None = None, random_init: bool = False) -> PromptTokenizer:
    """The tokenizer of a backbone. `text_dir`: a local folder with the HF tokenizer files (air-gapped use).

    With random weights and no tokenizer available offline, a full-size HF backbone falls back to the
    packaged WordPiece vocabulary: the token ids are then meaningless, which does not matter for random weights."""
    ctx = spec.context_length
    kind = spec.tokenizer.kind
    if kind == "openclip-bpe":
        return _openclip_bpe(ctx)
    if kind == "generated-wordpiece":
        return _generated_wordpiece(ctx)
    from transformers import AutoTokenizer

    source = spec.tokenizer.source or ""
    hint = (
        f"Download the tokenizer files ({', '.join(spec.tokenizer.files)}) of {source.removeprefix('hf-hub:')} "
        "on a machine with internet (e.g. `hf download REPO --local-dir DIR`), copy the folder here and pass "
        "--text-dir DIR (Python: load_backbone(..., text_dir=DIR))."
    )
    try:
        if text_dir is not None:
            resolve_files(LOCAL_PREFIX + str(text_dir), spec.tokenizer.files, what="the text tokenizer", hint=hint)
            return _hf(AutoTokenizer.from_pretrained(str(text_dir)), ctx, name=f"hf:{text_dir}")
        # with random weights a cached tokenizer is welcome, but not worth a download
        vocab = resolve_files(source, spec.tokenizer.files[:1], what="the text tokenizer", hint=hint,
                              allow_network=not random_init)
        return _hf(AutoTokenizer.from_pretrained(str(vocab.parent)), ctx, name=f"hf:{source}")
    except WeightsNotAvailableError:
        if random_init and text_dir is None and spec.tokenizer.offline_fallback == "generated-wordpiece":
            return _generated_wordpiece(ctx)
        raise
