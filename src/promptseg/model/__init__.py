"""Pure torch modules of the Segment Anything Model."""

from .configs import CONFIGS, HieraConfig, TinyConfig, ViTConfig, get_config
from .hiera import FpnNeck, Hiera, HieraImageEncoder
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .sam2 import Sam2
from .tiny_encoder import TinyEncoder
from .transformer import TwoWayTransformer

__all__ = [
    "CONFIGS",
    "FpnNeck",
    "Hiera",
    "HieraConfig",
    "HieraImageEncoder",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "Sam2",
    "TinyConfig",
    "TinyEncoder",
    "TwoWayTransformer",
    "ViTConfig",
    "get_config",
]
