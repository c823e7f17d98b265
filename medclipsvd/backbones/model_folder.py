"""A backbone named by its folder or hub id (`local-dir:` / `hf-hub:`) written out as a self-contained model
folder: what `register --bundle-backbone` stores, so a server needs neither the folder the model was trained
from nor the hub.

    FOLDER/config.json (+ preprocessor_config.json)   transformers format: the model's own files, copied
    FOLDER/open_clip_config.json                      open_clip format: the model's own file, copied
    FOLDER/<weights file of the format>               the base weights as safetensors (no pickle)
    FOLDER/tokenizer files                            the tokenizer the backbone uses, as Hugging Face writes
                                                      it (none for CLIP's BPE, which ships with open_clip)

`load_backbone(f"local-dir:{FOLDER}")` builds the same model (the caller checks its fingerprint)."""
from __future__ import annotations

import shutil
from pathlib import Path

from medclipsvd.backbones.openclip_arch import is_source_name, model_config_path
from medclipsvd.backbones.sources import resolve_files
from medclipsvd.errors import MedClipSVDError, WeightsNotAvailableError

SIDE_FILES = ("preprocessor_config.json",)  # beside a transformers config.json, when the model has one


def save_model_folder(backbone, folder: str | Path) -> Path:
    """Write `backbone` (unadapted, named by its folder or hub id) as a model folder; returns it."""
    from safetensors.torch import save_file

    if not is_source_name(backbone.name):
        raise MedClipSVDError(f"{backbone.name} is a registry backbone: it is built from medclipsvd's registry, "
                              "only its weights need bundling")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model_config_path(backbone.name)  # the file the spec was read from (cached for hub ids)
    shutil.copyfile(config, folder / config.name)
    if config.name == "config.json":
        for name in SIDE_FILES:
            try:
                shutil.copyfile(resolve_files(backbone.name, [name], what=name, hint="", allow_network=False),
                                folder / name)
            except WeightsNotAvailableError:
                continue
    weights_name = backbone.spec.pretrained.weight_files[0] if backbone.spec.pretrained else "model.safetensors"
    if not weights_name.endswith(".safetensors") or weights_name.endswith(".index.json"):
        weights_name = "model.safetensors"
    state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.model.state_dict().items()}
    save_file(state, str(folder / weights_name), metadata={"backbone": backbone.name})
    hf_tokenizer = getattr(backbone.tokenizer, "hf", None)
    if hf_tokenizer is not None:  # the folder's own, the family's standard one, or a --text-dir one
        hf_tokenizer.save_pretrained(str(folder))
    return folder
