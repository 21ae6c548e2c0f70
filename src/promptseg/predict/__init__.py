"""Predictors: embed an image once, then answer prompts. One contract (`PromptPredictor`), its
backends (torch `Predictor`, ONNX Runtime `OnnxPredictor`), the mirror-averaging wrapper
(`FlipPredictor`), one image state type (`ImageState`), and `load_predictor`.

Names are imported on first use, so `OnnxPredictor` works where torch is not installed."""

from importlib import import_module

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


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'promptseg.predict' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
