"""SAM in Hugging Face's format (`transformers`' `SamModel`: `facebook/sam-vit-base|large|huge`),
read and written without transformers: a folder with `config.json` and `model.safetensors`
(sharded or not; or `pytorch_model.bin`), or a lone state dict file whose names are
`SamModel`'s. Names map one to one onto ours (Meta's layout); the model type comes from the
names and shapes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

# (ours, Hugging Face's) name fragments, tried in order; each side's fragment occurs once in a name
_RENAMES = (
    ("image_encoder.patch_embed.proj.", "vision_encoder.patch_embed.projection."),
    ("image_encoder.neck.0.", "vision_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "vision_encoder.neck.layer_norm1."),
    ("image_encoder.neck.2.", "vision_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "vision_encoder.neck.layer_norm2."),
    ("image_encoder.blocks.", "vision_encoder.layers."),
    ("image_encoder.", "vision_encoder."),
    ("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "prompt_encoder.shared_embedding.positional_embedding"),
    ("prompt_encoder.point_embeddings.", "prompt_encoder.point_embed."),
    ("prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
    ("mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
    ("mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
    ("mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
    ("mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
)
# the image embedding's positional encoding: Hugging Face keeps it at the top as well (one module, tied)
SHARED_PE = "shared_image_embedding.positional_embedding"
HF_TYPES = ("vit_b", "vit_l", "vit_h")


def is_hf_sam(state_dict: dict) -> bool:
    """Whether a state dict has `SamModel`'s names."""
    return any(k.startswith("vision_encoder.") for k in state_dict) and any(
        k.startswith("mask_decoder.") for k in state_dict)


def hf_name(name: str, mlp_layers: dict[str, int]) -> str:
    """Our (Meta's) parameter name -> `SamModel`'s. `mlp_layers`: the layer count of each MLP head
    (prefix -> n), whose first and last layers Hugging Face calls proj_in and proj_out."""
    for ours, theirs in _RENAMES:
        if ours in name:
            name = name.replace(ours, theirs)
            break
    if name.startswith("vision_encoder.layers."):
        name = re.sub(r"\.norm([12])\.", r".layer_norm\1.", name)
    elif name.startswith("mask_decoder.transformer.layers."):
        name = re.sub(r"\.norm([1-4])\.", r".layer_norm\1.", name)
    m = re.match(r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.(.+)$", name)
    if m:
        prefix, i, rest = m.group(1), int(m.group(2)), m.group(3)
        n = mlp_layers[prefix]
        part = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
        name = f"{prefix}.{part}.{rest}"
    return name


def _mlp_layers(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        m = re.match(r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.", name)
        if m:
            counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)) + 1)
    return counts


def name_map(model_type: str) -> dict[str, str]:
    """Our names of `model_type` -> `SamModel`'s."""
    from .checkpoints import expected_shapes

    ours = expected_shapes(model_type)
    counts = _mlp_layers(ours)
    return {k: hf_name(k, counts) for k in ours}


def from_hf(state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """A `SamModel` state dict -> ours and its model type (vit_b, vit_l or vit_h); ValueError
    naming what does not fit."""
    from .checkpoints import expected_shapes

    tensors = dict(state_dict)
    shared = tensors.pop(SHARED_PE, None)
    pe = "prompt_encoder.shared_embedding.positional_embedding"
    if pe not in tensors and shared is not None:
        tensors[pe] = shared
    elif shared is not None and not torch.equal(shared, tensors[pe]):
        raise ValueError(f"{source}: {SHARED_PE} differs from {pe}; SamModel ties them, so the file is damaged")
    width = tensors.get("vision_encoder.patch_embed.projection.weight")
    best, best_misses = None, None
    for model_type in HF_TYPES:
        names = name_map(model_type)
        shapes = expected_shapes(model_type)
        misses = sum(1 for ours, theirs in names.items()
                     if theirs not in tensors or tuple(tensors[theirs].shape) != shapes[ours])
        misses += len(set(tensors) - set(names.values()))
        if misses == 0:
            return {ours: tensors[theirs] for ours, theirs in names.items()}, model_type
        if best_misses is None or misses < best_misses:
            best, best_misses = model_type, misses
    names = name_map(best)
    missing = sorted(v for v in names.values() if v not in tensors)
    unexpected = sorted(set(tensors) - set(names.values()))
    wrong = sorted(theirs for ours, theirs in names.items()
                   if theirs in tensors and tuple(tensors[theirs].shape) != expected_shapes(best)[ours])
    detail = "; ".join(f"{len(v)} {what} (e.g. {', '.join(v[:2])})" for what, v in (
        ("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if v)
    width_text = f", encoder width {width.shape[0]}" if width is not None else ""
    raise ValueError(f"{source} has Hugging Face SamModel names but fits none of {', '.join(HF_TYPES)}"
                     f"{width_text}; closest {best}: {detail}")


def to_hf(state_dict: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Our state dict of a ViT model -> `SamModel`'s names (with its tied top-level copy)."""
    if model_type not in HF_TYPES:
        raise ValueError(f"Hugging Face's SamModel has ViT-B/L/H image encoders; {model_type} has no such format")
    names = name_map(model_type)
    out = {names[k]: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    out[SHARED_PE] = out["prompt_encoder.shared_embedding.positional_embedding"].clone()
    return out


def hf_config(model_type: str) -> dict:
    """config.json of a `SamModel` of `model_type` (fields transformers leaves at their defaults
    are left out)."""
    from .model.configs import get_config

    cfg = get_config(model_type)
    return {
        "architectures": ["SamModel"],
        "model_type": "sam",
        "vision_config": {"model_type": "sam_vision_model", "hidden_size": cfg.embed_dim,
                          "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
                          "global_attn_indexes": list(cfg.global_attn_indexes), "output_channels": 256,
                          "image_size": 1024, "patch_size": 16, "mlp_dim": cfg.embed_dim * 4},
        "prompt_encoder_config": {"model_type": ""},
        "mask_decoder_config": {"model_type": ""},
    }


def write_hf(model, folder: str | os.PathLike) -> Path:
    """`model` (a ViT-B/L/H Sam) as a Hugging Face folder: config.json, model.safetensors and the
    image processor's settings, which `SamModel.from_pretrained` and `SamProcessor.from_pretrained`
    read."""
    from safetensors.torch import save_file

    from .io import atomic_path, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = to_hf(model.state_dict(), model.model_type)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(hf_config(model.model_type), folder / "config.json")
    write_json({"image_processor_type": "SamImageProcessor", "processor_class": "SamProcessor"},
               folder / "preprocessor_config.json")
    return folder


def read_hf_folder(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face model folder: model.safetensors, its shards
    (model.safetensors.index.json), or pytorch_model.bin (read with torch's safe loader)."""
    from .checkpoints import load_state_dict

    config = folder / "config.json"
    try:
        kind = json.loads(config.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {config}: {exc}") from None
    if kind != "sam":
        raise ValueError(f"{folder} holds a {kind!r} model; a Hugging Face folder must hold a SamModel (model_type sam)")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(load_state_dict(folder / shard))
        return tensors
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return load_state_dict(folder / name)
    raise FileNotFoundError(f"{folder} has a config.json but no model.safetensors or pytorch_model.bin")
