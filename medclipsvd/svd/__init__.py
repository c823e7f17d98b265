"""σ-only SVD adaptation: targets, decomposition cache, adapted modules, merge, adapter files."""
from medclipsvd.svd.adapt import (AdaptState, TargetInfo, adapt, adapt_state, adapted_modules, effective_weights,
                                  initial_sigmas, load_sigmas, merge, set_mode, sigma_parameters, trainable_count)
from medclipsvd.svd.adapter_io import load_adapter, read_adapter_config, save_adapter
from medclipsvd.svd.decompose import SVDCache, svd_factors
from medclipsvd.svd.layers import SVDLinear, SVDSelfAttention
from medclipsvd.svd.targets import BANDS, PRESETS, TargetSpec, band_layers, enumerate_candidates, select_targets

__all__ = [
    "AdaptState", "BANDS", "PRESETS", "SVDCache", "SVDLinear", "SVDSelfAttention", "TargetInfo", "TargetSpec",
    "adapt", "adapt_state", "adapted_modules", "band_layers", "effective_weights", "enumerate_candidates",
    "initial_sigmas", "load_adapter", "load_sigmas", "merge", "read_adapter_config", "save_adapter",
    "select_targets", "set_mode", "sigma_parameters", "svd_factors", "trainable_count",
]
