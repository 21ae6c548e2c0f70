"""Pure torch modules of the Segment Anything Model."""

from .configs import CONFIGS, ViTConfig, get_config
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .prompt_encoder import PromptEncoder
from .sam import Sam

__all__ = [
    "CONFIGS",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TwoWayTransformer",
    "ViTConfig",
    "get_config",
]
