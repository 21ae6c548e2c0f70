"""Names of HQ-SAM's `segment_anything_hq` package, so its scripts only change their imports:

from promptseg.compat.hq import sam_model_registry, SamPredictor, SamAutomaticMaskGenerator

Its registry's keys name the encoder (`vit_b`, ..., `vit_tiny`) and build HQ-SAM models
(promptseg's `vit_b_hq`, ..., `vit_tiny_hq`); the predictor's `predict` and `predict_torch` take
`hq_token_only` as its own do.
"""

from __future__ import annotations

from ..everything import MaskGenerator as SamAutomaticMaskGenerator
from ..predict import Predictor as SamPredictor
from . import model_registry

sam_model_registry = model_registry({key: f"{key}_hq" for key in ("vit_h", "vit_l", "vit_b", "vit_tiny")})
build_sam_vit_h, build_sam_vit_l, build_sam_vit_b, build_sam_vit_t = (
    sam_model_registry[k] for k in ("vit_h", "vit_l", "vit_b", "vit_tiny"))
build_sam = build_sam_vit_h

__all__ = ["SamAutomaticMaskGenerator", "SamPredictor", "build_sam", "sam_model_registry"]
