"""ONNX export (`export_model`, needs torch); `OnnxPredictor` (the ONNX Runtime backend, needs
only onnxruntime and numpy) lives in `promptseg.predict` and is named here too."""

from importlib import import_module

_WHERE = {
    "OnnxPredictor": "promptseg.predict.onnx_backend",
    "cached_export": "promptseg.export.exporter",
    "export_model": "promptseg.export.exporter",
    "quantize_int8": "promptseg.export.exporter",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'promptseg.export' has no attribute {name!r}")
