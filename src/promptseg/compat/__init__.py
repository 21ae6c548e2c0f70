"""Names of Meta's `segment_anything` package, so an existing script only changes its imports:

from promptseg.compat import sam_model_registry, SamPredictor
from promptseg.compat.utils.transforms import ResizeLongestSide
from promptseg.compat.utils.amg import rle_to_mask, batched_mask_to_box
from promptseg.compat.utils.onnx import SamOnnxModel
from promptseg.compat.modeling import Sam

and of Meta's `sam2` (its image side):

from promptseg.compat import build_sam2, SAM2ImagePredictor, SAM2AutomaticMaskGenerator
from promptseg.compat.build_sam import build_sam2
from promptseg.compat.sam2_image_predictor import SAM2ImagePredictor
from promptseg.compat.automatic_mask_generator import SAM2AutomaticMaskGenerator

and of HQ-SAM's `segment_anything_hq`:

from promptseg.compat.hq import sam_model_registry, SamPredictor, SamAutomaticMaskGenerator

The module paths mirror the ones scripts import; promptseg's own code is behind them.
"""

from __future__ import annotations

from functools import partial

from ..checkpoints import build_model
from ..everything import MaskGenerator as SamAutomaticMaskGenerator
from ..predict import Predictor as SamPredictor
from .automatic_mask_generator import SAM2AutomaticMaskGenerator
from .build_sam import build_sam2, build_sam2_hf
from .sam2_image_predictor import SAM2ImagePredictor
from .utils.transforms import ResizeLongestSide


def _builder(model_type: str, checkpoint=None):
    return build_model(model_type, checkpoint=checkpoint)


def model_registry(types: dict[str, str]) -> dict:
    """A `sam_model_registry`: each key builds our type `types[key]` (`checkpoint=` optional);
    "default" is vit_h's."""
    builders = {key: partial(_builder, ours) for key, ours in types.items()}
    return {"default": builders["vit_h"], **builders}


sam_model_registry = model_registry({"vit_h": "vit_h", "vit_l": "vit_l", "vit_b": "vit_b"})
build_sam_vit_h, build_sam_vit_l, build_sam_vit_b = (sam_model_registry[k] for k in ("vit_h", "vit_l", "vit_b"))
build_sam = build_sam_vit_h

__all__ = [
    "ResizeLongestSide",
    "SAM2AutomaticMaskGenerator",
    "SAM2ImagePredictor",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "build_sam",
    "build_sam2",
    "build_sam2_hf",
    "sam_model_registry",
]
