"""The adaptation methods, as data: name -> how to prepare a backbone, how to load a saved adapter, the
default learning rate. Adding a method is one module (`prepare(backbone, hp, lr) -> Prepared` and
`load(backbone, adapter_dir, meta)`) plus one row of `METHODS`.

Importing this module imports no torch: listing and validating method names stays cheap; an
implementation module is imported when a method is prepared or loaded."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from medclipsvd.errors import AdapterError
# where LoRA / full folders written before the one format (methods/adapter_folder.py) kept their method key
from medclipsvd.methods.adapter_folder import LEGACY_METHOD_FILE as METHOD_FILE


@dataclass(frozen=True)
class Method:
    name: str
    module: str | None = None         # medclipsvd.methods.<module>: prepare / load; None: nothing is trained
    prepare: str = "prepare"          # the function of `module` that makes a backbone trainable
    default_lr: float | None = None   # None: the pipeline's lr (σ) or no training at all

    @property
    def trained(self) -> bool:
        """Training writes an adapter folder that `load_trained` reads."""
        return self.module is not None

    def implementation(self):
        return importlib.import_module(f"medclipsvd.methods.{self.module}")


# Baseline learning rates: CLIP-LoRA's published 2e-4; 1e-5 is the usual full fine-tuning rate for CLIP.
# Everything else (iterations, schedule, batch, weight decay) is shared with the SVD run for a fair table.
_ROWS = (
    Method("svd", "svd"),
    Method("zero_shot"),
    Method("linear_probe"),          # a classifier on frozen image features (engine/evaluator.py)
    Method("lora", "deltas", "prepare_lora", default_lr=2e-4),
    Method("full", "deltas", "prepare_full", default_lr=1e-5),
)
REGISTRY = {m.name: m for m in _ROWS}
METHODS = tuple(REGISTRY)
TRAINED_METHODS = tuple(m.name for m in _ROWS if m.trained)
DEFAULT_LR = {m.name: m.default_lr for m in _ROWS if m.default_lr is not None}


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise AdapterError(f"unknown method {name!r} (--method); choose from {', '.join(METHODS)}")
    return REGISTRY[name]


def prepare_method(method: str, backbone, hp, lr: float | None = None):
    """Make `backbone` trainable for `method` (in place): a `Prepared`, or None for methods without gradient
    training (their backbone is frozen). `hp`: the run's HParams (``layers``, ``lr``)."""
    m = get_method(method)
    if not m.trained:
        from medclipsvd.methods.prepared import _freeze

        _freeze(backbone)
        return None
    backbone.fingerprint()  # of the base weights, before any change to them (adapters record it)
    return getattr(m.implementation(), m.prepare)(backbone, hp, lr or m.default_lr or hp.lr)


def load_trained(backbone, adapter_dir: str | Path) -> str:
    """Apply a saved adapter of any trained method to `backbone` (in place); returns the method name. The
    folder's method key (`adapter_folder.read_method`): adapter_config.json "method" (absent: σ), or the
    "method" of an older LoRA / full folder's method.json."""
    from medclipsvd.methods.adapter_folder import read_method, record_path

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterError(f"adapter folder {adapter_dir} does not exist; pass the `adapter` folder a "
                           "`medclipsvd train` run wrote under its --output")
    method, meta = read_method(adapter_dir)
    if meta is None:  # σ: its loader reads and checks adapter_config.json itself
        get_method("svd").implementation().load(backbone, adapter_dir, None)
        return "svd"
    meta_path = record_path(adapter_dir)
    if not isinstance(meta.get("fingerprint"), str) or not isinstance(meta.get("layers", "all"), (str, list)):
        raise AdapterError(f"{meta_path}: fields 'method', 'fingerprint' (and 'layers') are missing or of the "
                           "wrong type; the file is damaged or was edited")
    m = REGISTRY.get(method) if isinstance(method, str) else None
    if m is None or not m.trained or m.name == "svd":  # a σ record never reaches here
        raise AdapterError(f"{meta_path}: unknown method {_shown(method)}; a LoRA / full adapter folder names "
                           "lora or full here: the file is damaged or was edited, restore it or retrain")
    m.implementation().load(backbone, adapter_dir, meta)
    return m.name


def load_merged(backbone, adapter_dir: str | Path) -> str:
    """THE load-and-merge: `load_trained`, then σ folded into plain weights (LoRA / full merge on load), so
    inference runs the base architecture at its own speed. Returns the method name."""
    method = load_trained(backbone, adapter_dir)
    if method == "svd":
        from medclipsvd.svd import merge

        merge(backbone)
    return method


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
