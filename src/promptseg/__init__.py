"""promptseg: the Segment Anything Model, exact and fast, with the tools around it.

Names are imported on first use, so `promptseg.export.OnnxPredictor` (onnxruntime + numpy)
works where torch is not installed."""

from .cpu import tune_openmp
from .lazy import lazy_names

tune_openmp()  # before anything loads torch: see promptseg.cpu

__version__ = "0.1.0"

_WHERE = {
    "MaskGenerator": "everything",
    "FlipPredictor": "predict",
    "ImageState": "predict",
    "OnnxPredictor": "predict",
    "Predictor": "predict",
    "PromptPredictor": "predict",
    "load_model": "checkpoints",
    "load_predictor": "predict",
    "build_model": "checkpoints",
    "default_model": "checkpoints",
    "download": "checkpoints",
    "load_state_dict": "checkpoints",
    "read_image": "io",
    "refine_mask": "refine",
    "sample_image_path": "io",
    "TextPredictor": "text",
    "load_detector": "text",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE)
