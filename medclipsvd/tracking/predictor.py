"""Old import path of the Predictor, kept only for model folders registered by medclipsvd 0.1: their
pyfunc_model.py (stored in the registry, never rewritten) does `from medclipsvd.tracking.predictor import
Predictor`. New code imports `medclipsvd.serving.predictor`."""
from medclipsvd.serving.predictor import Predictor

__all__ = ["Predictor"]
