"""THE CLIP classification head, in one place: logits = logit_scale · image features @ class text featuresᵀ.

Training, evaluation, `api.predict`, the serving Predictor and the exported MONAI bundle all call it, so they
cannot drift apart. Callers bring the features to the device and dtype they compute in (that choice differs
on purpose: training keeps autocast's dtype, evaluation and serving use float32 on the CPU); the features are
already L2-normalised by the backbone's encoders. Pure torch arithmetic: importing this module imports nothing."""
from __future__ import annotations


def class_logits(logit_scale, image_features, text_features):
    """[B, C] logits from [B, D] image features and [C, D] class text features (one prompt per class)."""
    return logit_scale * image_features @ text_features.T
