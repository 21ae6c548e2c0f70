"""ONNX export (`export_model`, needs torch); `OnnxPredictor` (the ONNX Runtime backend, needs
only onnxruntime and numpy) lives in `promptseg.predict` and is named here too."""

from ..lazy import lazy_names

_WHERE = {
    "OnnxPredictor": "promptseg.predict.onnx_backend",
    "cached_export": "promptseg.export.exporter",
    "export_model": "promptseg.export.exporter",
    "quantize_int8": "promptseg.export.exporter",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE)
