"""Prompt tokenizers that cut the batch to its longest real prompt.

What follows the end token changes nothing (CLIP's text mask is causal and pools at the end token; BERT
masks padding), so encoding `[C, longest]` instead of `[C, context_length]` gives the same embeddings at a
fraction of the cost: with 256-token BiomedCLIP prompts that is most of the text tower's work.

SigLIP's text tower is the exception: it attends to every position, padding included, and pools at the last
one, as it was trained; its prompts are always padded to the full context (`cuts=False`)."""
from __future__ import annotations

from pathlib import Path

import torch

from medclipsvd.backbones.registry import BackboneSpec
from medclipsvd.backbones.sources import LOCAL_PREFIX, resolve_files
from medclipsvd.errors import WeightsNotAvailableError

GENERATED_VOCAB = Path(__file__).parent / "wordpiece-vocab.txt"


class PromptTokenizer:
    """Callable: list of prompts -> LongTensor [n, L] with L the longest real prompt (`cut=False`: L = context).

    `encode` returns the padded ids, or (ids, attention mask) when the pad id cannot tell padding from text
    (Hugging Face CLIP tokenizers pad with the end-of-text id). `cuts=False`: never cut (SigLIP)."""

    def __init__(self, encode, context_length: int, pad_id: int, name: str, cuts: bool = True,
                 vocab_size: int | None = None, hf=None):
        self._encode = encode
        self.hf = hf  # the Hugging Face tokenizer behind it (None: open_clip's BPE), for saving it with a model
        self.context_length = context_length
        self.pad_id = pad_id
        self.name = name
        self.cuts = cuts
        self.vocab_size = vocab_size

    def __call__(self, texts: list[str] | str, cut: bool | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        encoded = self._encode(list(texts))
        tokens, real = encoded if isinstance(encoded, tuple) else (encoded, None)
        if not (self.cuts if cut is None else cut):
            return tokens
        real = (tokens != self.pad_id).int() if real is None else real.int()
        # last real position + 1; every prompt keeps at least its start and end tokens
        lengths = real.shape[1] - real.flip(1).argmax(dim=1)
        return tokens[:, : int(lengths.max())].contiguous()


def _openclip_bpe(context_length: int) -> PromptTokenizer:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    return PromptTokenizer(lambda texts: tok(texts), context_length, pad_id=0, name="openclip-bpe",
                           vocab_size=len(tok.encoder))


def _cleaner(clean: str | None):
    if not clean:
        return lambda text: text
    from open_clip.tokenizer import get_clean_fn

    return get_clean_fn(clean)


def _hf(tokenizer, context_length: int, name: str, clean: str | None = None, cuts: bool = True) -> PromptTokenizer:
    clean_fn = _cleaner(clean)

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = tokenizer([clean_fn(t) for t in texts], padding="max_length", truncation=True,
                        max_length=context_length, return_tensors="pt", return_attention_mask=True)
        return out["input_ids"].long(), out["attention_mask"]

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return PromptTokenizer(encode, context_length, pad_id=int(pad), name=name, cuts=cuts, vocab_size=len(tokenizer),
                           hf=tokenizer)


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


def generated_siglip_tokenizer():
    """A SigLIP-shaped Hugging Face tokenizer over the packaged vocabulary: no start token, an end token
    appended and used as padding (as SigLIP's T5 tokenizer does). For tiny test models and random weights
    offline only: its ids mean nothing to real SigLIP weights. `.save_pretrained(DIR)` writes it as files."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(GENERATED_VOCAB.read_text().split("\n")) if w}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single="$A [SEP]", special_tokens=[("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[SEP]", eos_token="[SEP]", unk_token="[UNK]")


def _generated_siglip(context_length: int, clean: str | None) -> PromptTokenizer:
    return _hf(generated_siglip_tokenizer(), context_length, name="generated-siglip", clean=clean, cuts=False)


def build_tokenizer(spec: BackboneSpec, text_dir: str | None = None, random_init: bool = False) -> PromptTokenizer:
    """The tokenizer of a backbone. `text_dir`: a local folder with the HF tokenizer files (air-gapped use).

    With random weights and no tokenizer available offline, a full-size HF backbone falls back to the
    packaged vocabulary (generated WordPiece or SigLIP-shaped): the token ids are then meaningless, which does
    not matter for random weights."""
    from medclipsvd.backbones.families import NON_CAUSAL_TEXT

    ctx = spec.context_length
    kind = spec.tokenizer.kind
    cuts = spec.family not in NON_CAUSAL_TEXT
    if kind == "openclip-bpe":
        return _openclip_bpe(ctx)
    if kind == "generated-wordpiece":
        return _generated_wordpiece(ctx)
    if kind == "generated-siglip":
        return _generated_siglip(ctx, spec.tokenizer.clean)
    source = spec.tokenizer.source or ""
    hint = (
        f"Download the tokenizer files ({', '.join(spec.tokenizer.files)}) of {source.removeprefix('hf-hub:')} "
        "on a machine with internet (e.g. `hf download REPO --local-dir DIR`), copy the folder here and pass "
        "--text-dir DIR (Python: load_backbone(..., text_dir=DIR))."
    )
    try:
        if kind == "hf-auto":
            tok = _auto_tokenizer(spec, text_dir, hint, allow_network=not random_init)
            return _hf(tok, ctx, name=f"hf:{text_dir or source}", clean=spec.tokenizer.clean, cuts=cuts)
        from transformers import AutoTokenizer

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
        if random_init and text_dir is None and spec.tokenizer.offline_fallback == "generated-siglip":
            return _generated_siglip(ctx, spec.tokenizer.clean)
        raise


def _auto_tokenizer(spec: BackboneSpec, text_dir: str | None, hint: str, allow_network: bool):
    """AutoTokenizer from `text_dir`, a local-dir: folder, or a hub repository (the cache first; the hub when it
    can be reached and `allow_network`). WeightsNotAvailableError, with `hint`, when none has it."""
    from transformers import AutoTokenizer

    from medclipsvd.backbones.openclip_arch import TOKENIZER_MODELS
    from medclipsvd.backbones.sources import HF_PREFIX, hub_reachable

    source = LOCAL_PREFIX + str(text_dir) if text_dir is not None else (spec.tokenizer.source or "")
    if not source:
        raise WeightsNotAvailableError(f"{spec.name} names no tokenizer: put its tokenizer files "
                                       f"({', '.join(TOKENIZER_MODELS)}, tokenizer_config.json) in a folder and "
                                       "pass --text-dir DIR")
    if source.startswith(HF_PREFIX):
        repo = source[len(HF_PREFIX):].strip("/")
        online = allow_network and hub_reachable()
        for local_only in ((True, False) if online else (True,)):
            try:
                return AutoTokenizer.from_pretrained(repo, local_files_only=local_only)
            except Exception:  # noqa: BLE001 - not cached / not reachable / not a tokenizer repo
                continue
        raise WeightsNotAvailableError(
            f"cannot load the text tokenizer of {spec.name} from {source}: it is not in the local Hugging Face "
            f"cache and the hub cannot be reached (offline?). {hint}")
    folder = Path(source.removeprefix(LOCAL_PREFIX)).expanduser()
    if not any((folder / f).is_file() for f in TOKENIZER_MODELS):
        present = sorted(p.name for p in folder.iterdir())[:20] if folder.is_dir() else []
        raise WeightsNotAvailableError(
            f"cannot load the text tokenizer of {spec.name} from {folder}: expected one of "
            f"{', '.join(TOKENIZER_MODELS)} (with tokenizer_config.json), found {', '.join(present) or 'nothing'}. "
            f"{hint}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign tokenizer folder
        raise WeightsNotAvailableError(f"the tokenizer files in {folder} cannot be read ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). {hint}") from None
