"""THE CLIP classification head, in one place: logits = logit_scale · image features @ class text featuresᵀ
+ logit_bias.

Training, evaluation, `api.predict`, the serving Predictor and the exported MONAI bundle all call it, so they
cannot drift apart. Callers bring the features to the device and dtype they compute in (that choice differs
on purpose: training keeps autocast's dtype, evaluation and serving use float32 on the CPU); the scale and
bias follow the image features there. The features are already L2-normalised by the backbone's encoders.
Pure torch arithmetic: importing this module imports nothing."""
from __future__ import annotations


def class_logits(logit_scale, image_features, text_features, logit_bias=None):
    """[B, C] logits from [B, D] image features and [C, D] class text features (one prompt per class).

    `logit_scale` and `logit_bias` are 0-d tensors (the model's exp'd scale; the learnt bias of sigmoid-trained
    models such as SigLIP, None or 0 for softmax-trained CLIPs). The bias is the same for every class, so it
    leaves softmax and argmax unchanged, but it keeps the logits the model's own: SigLIP's probabilities are
    the sigmoid of these."""
    scale = logit_scale.to(image_features.device, image_features.dtype)
    logits = scale * image_features @ text_features.T
    if logit_bias is None:
        return logits
    return logits + logit_bias.to(image_features.device, image_features.dtype)
