"""Names of Meta's `segment_anything` package, so an existing script only changes its imports:

from promptseg.compat import sam_model_registry, SamPredictor
from promptseg.compat.utils.transforms import ResizeLongestSide
from promptseg.compat.utils.amg import rle_to_mask, batched_mask_to_box
from promptseg.compat.utils.onnx import SamOnnxModel
from promptseg.compat.modeling import Sam

The module paths mirror the ones scripts import; promptseg's own code is behind them.
"""

from __future__ import annotations

from functools import partial

from ..checkpoints import build_model
from ..everything import MaskGenerator as SamAutomaticMaskGenerator
from ..predict import Predictor as SamPredictor
from .utils.transforms import ResizeLongestSide


def _builder(model_type: str, checkpoint=None):
    return build_model(model_type, checkpoint=checkpoint)


build_sam_vit_h = partial(_builder, "vit_h")
build_sam_vit_l = partial(_builder, "vit_l")
build_sam_vit_b = partial(_builder, "vit_b")
build_sam = build_sam_vit_h

sam_model_registry = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
}

__all__ = ["ResizeLongestSide", "SamAutomaticMaskGenerator", "SamPredictor", "build_sam", "sam_model_registry"]
