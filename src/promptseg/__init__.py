"""promptseg: the Segment Anything Model, exact and fast, with the tools around it."""

from .checkpoints import build_model, default_model, download, load_state_dict
from .everything import MaskGenerator
from .io import read_image, sample_image_path
from .predictor import Predictor

__version__ = "0.1.0"

__all__ = [
    "MaskGenerator",
    "Predictor",
    "build_model",
    "default_model",
    "download",
    "load_state_dict",
    "read_image",
    "sample_image_path",
]
