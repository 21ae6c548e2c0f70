"""ONNX export (`export_model`, needs torch) and the ONNX Runtime path (`OnnxPredictor`, needs
only onnxruntime and numpy)."""

from importlib import import_module

_WHERE = {"OnnxPredictor": "runtime", "export_model": "exporter", "quantize_int8": "exporter"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'promptseg.export' has no attribute {name!r}")
