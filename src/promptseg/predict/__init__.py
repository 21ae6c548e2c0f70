"""Predictors: embed an image once, then answer prompts. One contract (`PromptPredictor`), its
backends (torch `Predictor`, ONNX Runtime `OnnxPredictor`), the mirror-averaging wrapper
(`FlipPredictor`), one image state type (`ImageState`), and `load_predictor`.

Names are imported on first use, so `OnnxPredictor` works where torch is not installed."""

from ..lazy import lazy_names

_WHERE = {
    "FlipPredictor": "flip",
    "ImageState": "state",
    "LowResAnswer": "contract",
    "OnnxPredictor": "onnx_backend",
    "Predictor": "torch_backend",
    "PromptPredictor": "contract",
    "BACKENDS": "loader",
    "as_predictor": "loader",
    "is_predictor": "contract",
    "load_predictor": "loader",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE)
