"""Pure torch modules of the Segment Anything Model."""

from .configs import CONFIGS, TinyConfig, ViTConfig, get_config
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_encoder import TinyEncoder
from .transformer import TwoWayTransformer

__all__ = [
    "CONFIGS",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TinyConfig",
    "TinyEncoder",
    "TwoWayTransformer",
    "ViTConfig",
    "get_config",
]
