"""`load_predictor`: the predictor a user names (weights, backend, mirror averaging), as the CLI
and the server build it."""

from __future__ import annotations

import os
from typing import Any

from .contract import PromptPredictor, is_predictor

BACKENDS = ("torch", "onnx", "onnx-int8")


def load_predictor(
    model: Any = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    backend: str = "torch",
    flip: bool = False,
    onnx_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> PromptPredictor:
    """A predictor for `model`: a registry name (`tiny`, `vit_b.sa1b`, ...; None for the bundled
    default) or a built `Sam`, or the weights in `checkpoint`. `backend` is torch, or onnx /
    onnx-int8 (ONNX Runtime on the files in `onnx_dir`, else exported once into the cache);
    `flip` wraps it in a `FlipPredictor`. Raises ValueError / FileNotFoundError with the fix."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        from ..checkpoints import load_model
        from ..model import Sam
        from .torch_backend import Predictor

        sam = model if isinstance(model, Sam) else load_model(model, checkpoint, device)
        predictor = Predictor(sam)
    else:
        from .onnx_backend import OnnxPredictor

        if not (model is None or isinstance(model, str)):
            raise ValueError("the ONNX backends take a model name or a checkpoint path, not a built model")
        precision = "int8" if backend == "onnx-int8" else "fp32"
        if onnx_dir is None:
            from ..export.exporter import cached_export

            onnx_dir = cached_export(model, checkpoint, precision)
        predictor = OnnxPredictor(onnx_dir, precision=precision)
    if flip:
        from .flip import FlipPredictor

        predictor = FlipPredictor(predictor)
    return predictor


def as_predictor(model: Any) -> PromptPredictor:
    """A predictor as it is, or a built `Sam` model behind the torch predictor."""
    from ..model import Sam

    if is_predictor(model):
        return model
    if isinstance(model, Sam):
        from .torch_backend import Predictor

        return Predictor(model)
    raise TypeError(f"expected a Sam model or a predictor (promptseg.predict.PromptPredictor), got {type(model).__name__}")
