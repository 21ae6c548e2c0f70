"""`segment_anything.modeling`: the model's modules, as scripts import them (promptseg's)."""

from ...model.image_encoder import ImageEncoderViT
from ...model.mask_decoder import MaskDecoder
from ...model.prompt_encoder import PromptEncoder
from ...model.sam import Sam
from ...model.transformer import TwoWayTransformer

__all__ = ["ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam", "TwoWayTransformer"]
