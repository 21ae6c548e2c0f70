"""promptseg: the Segment Anything Model, exact and fast, with the tools around it.

Names are imported on first use, so `promptseg.export.OnnxPredictor` (onnxruntime + numpy)
works where torch is not installed."""

from importlib import import_module

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
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'promptseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
