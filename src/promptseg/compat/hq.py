"""Names of HQ-SAM's `segment_anything_hq` package, so its scripts only change their imports:

from promptseg.compat.hq import sam_model_registry, SamPredictor, SamAutomaticMaskGenerator

Its registry's keys name the encoder (`vit_b`, ..., `vit_tiny`) and build HQ-SAM models
(promptseg's `vit_b_hq`, ..., `vit_tiny_hq`); the predictor's `predict` and `predict_torch` take
`hq_token_only` as its own do.
"""

from __future__ import annotations

from functools import partial

from ..checkpoints import build_model
from ..everything import MaskGenerator as SamAutomaticMaskGenerator
from ..predict import Predictor as SamPredictor


def _builder(model_type: str, checkpoint=None):
    return build_model(model_type, checkpoint=checkpoint)


build_sam_vit_h = partial(_builder, "vit_h_hq")
build_sam_vit_l = partial(_builder, "vit_l_hq")
build_sam_vit_b = partial(_builder, "vit_b_hq")
build_sam_vit_t = partial(_builder, "vit_tiny_hq")
build_sam = build_sam_vit_h

sam_model_registry = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_tiny": build_sam_vit_t,
}

__all__ = ["SamAutomaticMaskGenerator", "SamPredictor", "build_sam", "sam_model_registry"]
