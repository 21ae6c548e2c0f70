"""`sam2.build_sam`: SAM 2 models built by Meta's function names and config file names, on
promptseg's modules (no Hydra): `build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt)`."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import torch

from ..checkpoints import build_model, load_model
from ..model import CONFIGS, Sam2

# Meta's Hugging Face model ids -> our architecture names
HF_MODEL_IDS = {
    f"facebook/{release}-hiera-{word}": f"{release}_hiera_{size}"
    for release in ("sam2", "sam2.1")
    for word, size in (("tiny", "t"), ("small", "s"), ("base-plus", "b+"), ("large", "l"))
}


def config_model_type(config_file: str | os.PathLike) -> str:
    """The architecture a SAM 2 config file names: `configs/sam2.1/sam2.1_hiera_t.yaml` (or its
    file name alone, with or without `.yaml`) -> `sam2.1_hiera_t`."""
    name = PurePosixPath(str(config_file).replace("\\", "/")).name.removesuffix(".yaml")
    if name not in CONFIGS or "_hiera_" not in name:
        choices = ", ".join(f"{k}.yaml" for k in CONFIGS if "_hiera_" in k)
        raise ValueError(f"unknown SAM 2 config {str(config_file)!r}; choose one of {choices}")
    return name


def _device(device) -> str | torch.device:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _finish(model: Sam2, mode: str, apply_postprocessing: bool) -> Sam2:
    if not apply_postprocessing:  # Meta's switch for the image predictor's single-mask fallback
        model.mask_decoder.dynamic_multimask = None
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    return model.train(mode == "train")


def build_sam2(config_file, ckpt_path=None, device=None, mode: str = "eval", hydra_overrides_extra=(),
               apply_postprocessing: bool = True, **kwargs) -> Sam2:
    """A SAM 2 image model of `config_file`'s size with the weights in `ckpt_path` (Meta's `.pt`,
    video parts skipped; or ours). `device` None: CUDA when there is one, else the CPU."""
    if hydra_overrides_extra:
        raise ValueError("promptseg builds SAM 2 without Hydra and takes no hydra_overrides_extra; "
                         "set options on the model or predictor instead")
    model = build_model(config_model_type(config_file), checkpoint=ckpt_path, device=_device(device))
    return _finish(model, mode, apply_postprocessing)


def build_sam2_hf(model_id: str, device=None, mode: str = "eval", apply_postprocessing: bool = True,
                  **kwargs) -> Sam2:
    """The model of a Hugging Face id (`facebook/sam2.1-hiera-tiny`, ...) from promptseg's weights
    cache: fetch it once with `promptseg download sam2.1_hiera_t` (nothing is pulled from a hub)."""
    if model_id not in HF_MODEL_IDS:
        raise ValueError(f"unknown SAM 2 model id {model_id!r}; choose one of {', '.join(HF_MODEL_IDS)}")
    model = load_model(HF_MODEL_IDS[model_id], device=_device(device))
    return _finish(model, mode, apply_postprocessing)
