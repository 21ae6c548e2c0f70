"""Writing a model as `encoder.onnx` and `decoder.onnx` (optionally int8-quantized copies)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from ..model import Sam
from ..weights import SETTINGS_KEY
from .graphs import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    HQ_DECODER_INPUTS,
    HQ_ENCODER_OUTPUTS,
    SAM2_DECODER_INPUTS,
    SAM2_DECODER_OUTPUTS,
    SAM2_ENCODER_OUTPUTS,
    DecoderGraph,
    EncoderGraph,
    HqDecoderGraph,
    HqEncoderGraph,
    Sam2DecoderGraph,
    Sam2EncoderGraph,
)

DEFAULT_OPSET = 17
QUANTIZE_MODES = ("int8",)


def model_metadata(sam: Sam) -> dict[str, str]:
    """What a runtime needs to know besides the graphs, stored in each file's metadata."""
    from .. import __version__

    g = sam.prompt_encoder.image_embedding_size
    settings = {} if sam.weights_settings is None else {SETTINGS_KEY: sam.weights_settings.to_metadata()}
    return {
        **settings,
        "promptseg_version": __version__,
        "model_type": str(sam.model_type or "custom"),
        "img_size": str(sam.img_size),
        "embedding_shape": f"{sam.prompt_encoder.embed_dim},{g[0]},{g[1]}",
        "mask_threshold": str(float(sam.mask_threshold)),
        "image_format": sam.image_format,
        "family": sam.family,
        **_sam2_metadata(sam),
        **({"hq": "1", "hq_features_shape": ",".join(str(v) for v in _hq_shape(sam))} if sam.hq else {}),
    }


def _hq_shape(sam: Sam) -> tuple[int, int, int]:
    """The (C/8, 4g, 4g) of an HQ-SAM model's HQ features."""
    g = sam.prompt_encoder.image_embedding_size
    return sam.prompt_encoder.embed_dim // 8, 4 * g[0], 4 * g[1]


def _sam2_metadata(sam: Sam) -> dict[str, str]:
    """SAM 2's extras: the clamp of returned low-res logits, the single-mask fallback's
    (delta, threshold) and the high-res levels' shapes."""
    if sam.family != "sam2":
        return {}
    decoder = sam.mask_decoder
    g = sam.prompt_encoder.image_embedding_size
    meta = {
        "low_res_limit": str(float(sam.low_res_limit)),
        "high_res_shapes": ";".join(
            f"{c},{f * g[0]},{f * g[1]}" for c, f in ((decoder.conv_s0.out_channels, 4), (decoder.conv_s1.out_channels, 2))
        ),
    }
    if decoder.dynamic_multimask is not None:
        meta["dynamic_multimask"] = ",".join(str(float(v)) for v in decoder.dynamic_multimask)
    return meta


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _dummy_decoder_inputs(sam: Sam) -> tuple[torch.Tensor, ...]:
    c, (gh, gw) = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size
    mh, mw = sam.prompt_encoder.mask_input_size
    gen = torch.Generator().manual_seed(0)
    high_res = ()
    if sam.hq:
        high_res = (torch.randn(1, *_hq_shape(sam), generator=gen),)
    elif sam.family == "sam2":
        decoder = sam.mask_decoder
        high_res = (torch.randn(1, decoder.conv_s0.out_channels, 4 * gh, 4 * gw, generator=gen),
                    torch.randn(1, decoder.conv_s1.out_channels, 2 * gh, 2 * gw, generator=gen))
    return (
        torch.randn(1, c, gh, gw, generator=gen),
        *high_res,
        torch.randint(0, sam.img_size, (1, 3, 2), generator=gen).float(),
        torch.tensor([[1.0, 0.0, 1.0]]),
        torch.randn(1, 1, mh, mw, generator=gen),
        torch.tensor([1.0]),
        torch.tensor([1500.0, 1000.0]),
    )


def export_model(
    sam: Sam,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    return_single_mask: bool = False,
) -> dict[str, Path]:
    """Write encoder.onnx and decoder.onnx into `out_dir` (and encoder.int8.onnx /
    decoder.int8.onnx with quantize="int8"). Returns the paths written by name."""
    if quantize not in (None, *QUANTIZE_MODES):
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)} (or none), got {quantize!r}")
    _check_opset(opset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sam = _cpu_float(sam)
    meta = model_metadata(sam)
    paths = {"encoder": out / "encoder.onnx", "decoder": out / "decoder.onnx"}
    s = sam.img_size
    sam2 = sam.family == "sam2"
    if sam2:
        graph, outputs = Sam2EncoderGraph(sam), SAM2_ENCODER_OUTPUTS
    elif sam.hq:
        graph, outputs = HqEncoderGraph(sam), HQ_ENCODER_OUTPUTS
    else:
        graph, outputs = EncoderGraph(sam), ENCODER_OUTPUTS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic and the legacy exporter
        torch.onnx.export(
            graph,
            (torch.randint(0, 256, (s, s if sam2 else s * 2 // 3, 3)).float(),),
            str(paths["encoder"]),
            input_names=list(ENCODER_INPUTS),
            output_names=list(outputs),
            # SAM 2's input is always the square; SAM's keeps the image's aspect
            dynamic_axes={} if sam2 else {"input_image": {0: "image_height", 1: "image_width"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _set_metadata(paths["encoder"], meta)
    export_decoder(sam, paths["decoder"], opset, return_single_mask)
    if quantize == "int8":
        for name in ("encoder", "decoder"):
            paths[f"{name}_int8"] = quantize_int8(paths[name], out / f"{name}.int8.onnx", meta)
    return paths


def export_decoder(sam: Sam, path: str | Path, opset: int = DEFAULT_OPSET, return_single_mask: bool = False) -> Path:
    """Write the prompt encoder and mask decoder alone as one ONNX file (what a browser or any
    client holding a served embedding needs); returns its path."""
    _check_opset(opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sam = _cpu_float(sam)
    sam2 = sam.family == "sam2"
    per_prompt = {"object_score_logits": {0: "num_prompts"}} if sam2 else {}
    if sam2:
        graph, inputs = Sam2DecoderGraph, SAM2_DECODER_INPUTS
    else:
        graph, inputs = (HqDecoderGraph, HQ_DECODER_INPUTS) if sam.hq else (DecoderGraph, DECODER_INPUTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph(sam, return_single_mask=return_single_mask),
            _dummy_decoder_inputs(sam),
            str(path),
            input_names=list(inputs),
            output_names=list(SAM2_DECODER_OUTPUTS if sam2 else DECODER_OUTPUTS),
            dynamic_axes={
                **per_prompt,
                "point_coords": {0: "num_prompts", 1: "num_points"},
                "point_labels": {0: "num_prompts", 1: "num_points"},
                "mask_input": {0: "num_masks"},
                "masks": {0: "num_prompts", 2: "height", 3: "width"},
                "iou_predictions": {0: "num_prompts"},
                "low_res_masks": {0: "num_prompts"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _set_metadata(path, model_metadata(sam))
    return path


def _cpu_float(sam: Sam) -> Sam:
    """The model as the tracer needs it (eval, float32, CPU) without changing the caller's
    model: a server keeps using its own, wherever it lives."""
    if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in sam.parameters()) and not sam.training:
        return sam
    return copy.deepcopy(sam).eval().float().cpu()


def _check_opset(opset: int) -> None:
    if not 14 <= opset <= 21:
        raise ValueError(f"opset {opset} is not supported; use 14 to 21 (default {DEFAULT_OPSET})")


def quantize_int8(src: Path, dst: Path, meta: dict[str, str]) -> Path:
    """Dynamic int8 quantization of the matrix products: weights stored as int8, activations
    quantized per call. Convolutions stay fp32: ONNX Runtime's int8 convolution measured five
    times slower than its fp32 one on the default model's encoder here."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice on pre-processing through the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    _set_metadata(dst, {**meta, "quantization": "int8-dynamic"})
    return dst


def cached_export(name: str | None = None, checkpoint: str | Path | None = None, precision: str = "fp32") -> Path:
    """The folder of `encoder.onnx` / `decoder.onnx` for the model a user names (as
    `checkpoints.load_model` takes it), exported once into the cache under a key of its weights
    file (path, size, time) and of this version; `precision` "int8" also writes the quantized pair."""
    import hashlib

    from .. import __version__
    from ..checkpoints import cache_dir, load_model, weights_file

    weights = weights_file(name, checkpoint)
    stat = weights.stat() if weights.is_file() else None
    key = f"{name}|{weights.resolve()}|{stat and (stat.st_size, stat.st_mtime_ns)}|{__version__}"
    folder = cache_dir() / "onnx" / f"{name or 'default'}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    suffix = ".int8.onnx" if precision == "int8" else ".onnx"
    if not all((folder / f"{n}{suffix}").is_file() for n in ("encoder", "decoder")):
        export_model(load_model(name, checkpoint), folder, quantize="int8" if precision == "int8" else None)
    return folder
