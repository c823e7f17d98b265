"""Errors of the interpretability analysis (all are `MedClipSVDError`s, so the CLI prints them
without a traceback)."""
from medclipsvd.errors import AdapterError, DataError, MedClipSVDError


class InterpretError(MedClipSVDError, ValueError):
    """Inputs to an interpretability analysis are inconsistent (shapes, sizes, empty pools) or the
    model has a structure the analysis does not support."""


__all__ = ["AdapterError", "DataError", "InterpretError", "MedClipSVDError"]
