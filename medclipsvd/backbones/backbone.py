"""`Backbone`: one CLIP-style model (image tower + text tower) with its tokenizer and preprocessing,
and `load_backbone`, the factory that builds it from the registry and a weight source."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medclipsvd.backbones import openclip_arch
from medclipsvd.backbones.architectures import TOWERS, TowerLayout, discover_layouts, tower_of_parameter
from medclipsvd.backbones.registry import BackboneSpec, get_spec
from medclipsvd.backbones.sources import read_state_dict, resolve_files
from medclipsvd.backbones.tokenizers import PromptTokenizer, build_tokenizer
from medclipsvd.errors import MedClipSVDError, WeightsNotAvailableError

HF_TEXT_CONFIGS = Path(__file__).parent / "hf_text"
DEFAULT_WEIGHT_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def _get(module: nn.Module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


class Backbone(nn.Module):
    """A CLIP-style model plus what is needed to use it: tokenizer, preprocessing, identity."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, tokenizer: PromptTokenizer, source: str):
        super().__init__()
        from open_clip.transform import image_transform

        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.preprocess = image_transform(spec.image_size, is_train=False, mean=self.mean, std=self.std)
        self._fingerprint: str | None = None
        # found once in the plain model: adaptation later replaces the modules the layouts point at
        self._layouts = discover_layouts(model, where=spec.name)

    # identity -----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.spec.preprocess.mean)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.spec.preprocess.std)

    def fingerprint(self) -> str:
        """A hash of the base weights. Computed once, before any adaptation changes the modules."""
        if self._fingerprint is None:
            from medclipsvd.backbones.fingerprint import state_fingerprint

            self._fingerprint = state_fingerprint(self.model.state_dict())
        return self._fingerprint

    # structure ----------------------------------------------------------------------------------
    def layout(self, tower: str) -> TowerLayout:
        return self._layouts[tower]

    def blocks(self, tower: str) -> nn.ModuleList:
        return _get(self.model, self.layout(tower).blocks)

    def num_layers(self, tower: str) -> int:
        return len(self.blocks(tower))

    def num_heads(self, tower: str) -> int:
        return int(_get(self.blocks(tower)[0], self.layout(tower).heads_attr))

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per tower ('vision', 'text', 'other') and 'total', counting each tensor once."""
        counts = {"vision": 0, "text": 0, "other": 0}
        for name, p in self.model.named_parameters():
            counts[tower_of_parameter(name)] += p.numel()
        counts["total"] = sum(counts.values())
        return counts

    # computation --------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        """exp of the model's learnt log-scale, a 0-d tensor."""
        return self.model.logit_scale.detach().exp().reshape(())

    @property
    def logit_bias(self) -> torch.Tensor:
        """The learnt logit bias of sigmoid-trained models (SigLIP); 0 for softmax-trained CLIPs. A 0-d tensor."""
        bias = getattr(self.model, "logit_bias", None)
        if bias is None:
            return torch.zeros((), device=self.model.logit_scale.device, dtype=self.model.logit_scale.dtype)
        return bias.detach().reshape(())

    def tokenize(self, texts: list[str] | str) -> torch.Tensor:
        """Token ids on the model's device, cut to the longest real prompt of the batch."""
        return self.tokenizer(texts).to(self.model.logit_scale.device)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.model.encode_image(images)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if self.family == "openclip-vit":
            feats = _encode_text_openclip(self.model, tokens, self.model.text_pool_type,
                                          getattr(self.model, "text_eos_id", None))
        elif self.family == "openclip-siglip":
            feats = _encode_text_openclip(self.model.text, tokens, self.model.text.pool_type,
                                          getattr(self.model.text, "eos_id", None))
        elif self.family in ("hf-clip", "hf-siglip"):
            feats = self.model.encode_text(tokens)
        else:
            feats = self.model.text(tokens)
        return F.normalize(feats, dim=-1) if normalize else feats

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, C]: logit_scale · cos(image, prompt) + logit_bias (0 for CLIPs)."""
        from medclipsvd.backbones.head import class_logits

        return class_logits(self.logit_scale, self.encode_image(images), self.encode_text(tokens), self.logit_bias)


def _encode_text_openclip(m: nn.Module, tokens: torch.Tensor, pool_type: str, eos_id) -> torch.Tensor:
    """An open_clip text transformer (CLIP's top level, or CustomTextCLIP's TextTransformer) on `tokens`.

    open_clip's encode_text always adds all context positions; slicing the positional embedding and the causal
    mask to the cut length computes exactly the same thing for the real tokens. A tower without causal mask
    (SigLIP) gets its full context: its tokenizer never cuts."""
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast = m.token_embedding.weight.dtype  # open_clip's get_cast_dtype would rebuild an adapted weight
    x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
    mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
    x = m.transformer(x, attn_mask=mask)
    x = m.ln_final(x)
    x = text_global_pool(x, tokens, pool_type, eos_token_id=eos_id)
    if m.text_projection is not None:
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
    return x


# ------------------------------------------------------------------------------------------------
def _build_model(spec: BackboneSpec, text_dir: str | None = None) -> nn.Module:
    import open_clip.model as ocm

    if spec.family in ("hf-clip", "hf-siglip"):
        from medclipsvd.backbones import hf_models

        return hf_models.build(spec.model_cfg)
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.model_cfg.items() if k != "custom_text"}
    if spec.family == "openclip-vit":
        return ocm.CLIP(**cfg)
    import medclipsvd.backbones.tiny_timm  # noqa: F401  (registers the tiny timm ViTs)

    if spec.family == "openclip-siglip":
        model = ocm.CustomTextCLIP(**cfg)
        if spec.tiny:  # as for tiny-biomedclip below: timm's std 0.02 would leave σ little to move at width 64
            for module in model.visual.trunk.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=module.in_features ** -0.5)
        return model

    text = cfg["text_cfg"]
    if "hf_text_config" in text:  # a BERT config shipped with the package: builds offline
        config_dir = str(HF_TEXT_CONFIGS / text.pop("hf_text_config"))
    elif text_dir is not None and (Path(text_dir) / "config.json").is_file():
        config_dir = str(text_dir)
    else:  # the text model's config.json from the Hugging Face cache or hub (weights come from the checkpoint)
        config_dir = text["hf_model_name"]
    text.update(hf_model_name=config_dir, hf_tokenizer_name=config_dir, hf_model_pretrained=False)
    try:
        model = ocm.CustomTextCLIP(**cfg)
    except OSError as exc:  # transformers could not find the text model's config
        raise WeightsNotAvailableError(
            f"cannot build the text tower of {spec.name}: the config of {config_dir} is not available here "
            f"({str(exc).splitlines()[0][:160]}). Download it (`hf download {config_dir} --local-dir DIR`) and pass "
            "--text-dir DIR.") from None
    if spec.tiny:
        # timm and BERT initialise Linears with std 0.02, which at width 64 leaves the residual stream to the
        # embeddings: σ then barely moves the output and the tiny model cannot learn a demo task. open_clip's
        # own towers scale by fan-in; do the same so that both tiny backbones train like real ones.
        for module in [*model.visual.trunk.modules(), *model.text.transformer.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features ** -0.5)
    return model


def _weights_hint(spec: BackboneSpec) -> str:
    repo = spec.pretrained.source.removeprefix("hf-hub:") if spec.pretrained else "?"
    files = " or ".join(spec.pretrained.weight_files if spec.pretrained else DEFAULT_WEIGHT_FILES)
    text = (" For biomedclip also provide the BiomedBERT tokenizer folder with --text-dir."
            if spec.tokenizer.kind == "hf" else "")
    return (f"To work offline, download {files} from the Hugging Face repo {repo} on a machine with internet "
            f"(e.g. `hf download {repo} --local-dir DIR`), copy DIR here and pass --weights local-dir:DIR "
            f"(Python: load_backbone({spec.name!r}, weights='local-dir:DIR')).{text} "
            "For architecture-only checks use --random-init.")


def load_backbone(
    name: str,
    *,
    weights: str | None = None,
    random_init: bool = False,
    text_dir: str | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Backbone:
    """Build a registered backbone.

    weights: `hf-hub:org/repo`, `local-dir:/folder`, or a weights file (.safetensors or a tensor-only .bin);
        default: the registry's pretrained source (tiny backbones default to seeded random weights).
    random_init: full architecture with random weights (seeded by `seed`, so identical on every call).
    text_dir: local folder with the text tokenizer files (BiomedCLIP's BiomedBERT) for air-gapped use.

    A model named by its folder or hub id (`local-dir:` / `hf-hub:`) with `weights` another whole model folder
    (the same model moved, copied, or downloaded with `hf download --local-dir`) is that folder: its config,
    weights and tokenizer. Adapters made on the first load on it when the weights are the same (the fingerprint
    check of svd/adapter_io.py:check_base).
    """
    if weights and weights != name and openclip_arch.is_source_name(name) and openclip_arch.is_model_folder(weights):
        name, weights = "local-dir:" + weights.removeprefix("local-dir:"), None
    spec = get_spec(name)
    use_random = random_init or (spec.tiny and weights is None)
    state = None
    source = f"random-init:seed={seed}"
    if not use_random:
        if weights is None and spec.pretrained is None:
            if openclip_arch.openclip_model_cfg(name) is not None:
                raise WeightsNotAvailableError(openclip_arch.missing_weights_message(name))
            raise WeightsNotAvailableError(f"backbone {name!r} has no pretrained weights; pass weights=...")
        source = weights or spec.pretrained.source
        candidates = spec.pretrained.weight_files if spec.pretrained else DEFAULT_WEIGHT_FILES
        if _is_tag(name, source):  # an open_clip pretrained tag: its hub repo, activation and normalisation
            spec, location, candidates = _spec_for_tag(spec, source)
        else:
            location = source
        path = resolve_files(location, candidates, what=f"{name} weights", hint=_weights_hint(spec))
        state = read_weights(path, location)  # before building: a missing file fails at once
        spec = _activation_from_config(spec, path)
        text_dir = text_dir or _tokenizer_beside(spec, path)
    tokenizer = build_tokenizer(spec, text_dir=text_dir, random_init=use_random)
    _check_vocabulary(spec, tokenizer)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_model(spec, text_dir=text_dir)
    if state is not None:
        _load_state(model, state, source)
    model.eval()
    return Backbone(spec, model, tokenizer, source).to(device)


def _is_tag(name: str, source: str) -> bool:
    """A weights argument without a scheme that is not a file names an open_clip pretrained tag."""
    return (openclip_arch.openclip_model_cfg(name) is not None and not openclip_arch.is_source_name(source)
            and not Path(source).expanduser().exists() and "/" not in source and not source.endswith(
                (".safetensors", ".bin", ".pt", ".pth")))


def _spec_for_tag(spec: BackboneSpec, tag: str) -> tuple[BackboneSpec, str, list[str]]:
    location, files, record = openclip_arch.tag_source(spec.name, tag)
    cfg = dict(spec.model_cfg)
    if record.get("quick_gelu"):
        cfg["quick_gelu"] = True
    update = {"model_cfg": cfg}
    if record.get("mean") and record.get("std"):
        update["preprocess"] = spec.preprocess.model_copy(update={"mean": tuple(record["mean"]),
                                                                  "std": tuple(record["std"])})
    return spec.model_copy(update=update), location, files


def _activation_from_config(spec: BackboneSpec, weights_file: Path) -> BackboneSpec:
    """Weights for an architecture name that come with an open_clip_config.json (a local-dir: or hub folder)
    keep the activation it declares: OpenAI-trained weights need QuickGELU, which leaves no trace in the
    tensors, so a mismatch would load silently and compute something else."""
    config = weights_file.parent / "open_clip_config.json"
    if openclip_arch.openclip_model_cfg(spec.name) is None or not config.is_file():
        return spec
    try:
        declared = json.loads(config.read_text()).get("model_cfg", {}).get("quick_gelu")
    except ValueError:
        return spec
    if declared is None or bool(declared) == bool(spec.model_cfg.get("quick_gelu")):
        return spec
    return spec.model_copy(update={"model_cfg": {**spec.model_cfg, "quick_gelu": bool(declared)}})


def read_weights(path: Path, location: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; a transformers `model.safetensors.index.json` reads each of its shards
    (safetensors only) from the same place."""
    if not path.name.endswith(".index.json"):
        return read_state_dict(path)
    try:
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise WeightsNotAvailableError(f"{path} is not a safetensors index (a JSON object with a 'weight_map')") \
            from None
    if not all(isinstance(s, str) and s.endswith(".safetensors") and "/" not in s and "\\" not in s
               and s not in (".", "..") for s in shards):
        raise WeightsNotAvailableError(f"{path} names shards that are not .safetensors files of the same folder")
    folder = location if location.startswith(("hf-hub:", "local-dir:")) else f"local-dir:{path.parent}"
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(read_state_dict(resolve_files(folder, [shard], what=f"weight shard {shard}",
                                                   hint="all shards named by the index must be present")))
    return state


def _check_vocabulary(spec: BackboneSpec, tokenizer: PromptTokenizer) -> None:
    """A standard tokenizer standing in for a transformers model's own (CLIP's BPE for a folder without tokenizer
    files) whose ids run past the model's vocabulary would fail inside the embedding, or read the wrong rows: say
    so at once. The model's own tokenizer files are trusted (their length may count unused extra tokens)."""
    from medclipsvd.backbones import hf_arch

    if not hf_arch.is_hf_config(spec.model_cfg) or spec.tokenizer.kind == "hf-auto" or tokenizer.vocab_size is None:
        return
    model_vocab = hf_arch.vocab_size(spec.model_cfg)
    if tokenizer.vocab_size > model_vocab:
        raise MedClipSVDError(
            f"the tokenizer of {spec.name} ({tokenizer.name}) has {tokenizer.vocab_size} tokens but the model's text "
            f"vocabulary has {model_vocab}: put the model's own tokenizer files (tokenizer.json or vocab.json + "
            "merges.txt, tokenizer_config.json) in the folder, or pass --text-dir DIR with them")


def _tokenizer_beside(spec: BackboneSpec, weights_file: Path) -> str | None:
    """A SentencePiece-style tokenizer next to the weights (a hub repository downloaded with `hf download`, e.g.
    timm/ViT-B-16-SigLIP) is the model's own: use it rather than asking for --text-dir."""
    from medclipsvd.backbones.openclip_arch import TOKENIZER_MODELS

    if spec.tokenizer.kind != "hf-auto":
        return None
    folder = weights_file.parent
    return str(folder) if any((folder / f).is_file() for f in TOKENIZER_MODELS) else None


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    if type(model).__name__ == "HFDualEncoder":
        from medclipsvd.backbones.hf_models import from_hf_state

        state = from_hf_state(state)
    # position_ids are non-persistent buffers in recent transformers but saved in older checkpoints
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise MedClipSVDError(
            f"weights from {source} do not fit this architecture: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}). "
            "Check that the weights belong to this backbone."
        )


__all__ = ["Backbone", "load_backbone", "TOWERS"]
