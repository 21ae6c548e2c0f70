"""The whole model: pixel normalisation and padding in, mask decoding, resizing out."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def full_size_logits(masks: torch.Tensor, input_size, original_size, img_size: int) -> torch.Tensor:
    """SAM's full-size step for low-res logits (B, M, 4h, 4w): upsample to the padded input
    square, keep the unpadded (ih, iw) = `input_size`, resize that to `original_size` (H, W).

    With sizes as ints, the first step only reads the low-res rows and columns the kept part
    needs (at the same scale, bilinear sampling gives identical values); sizes may also be
    tensors (the ONNX graph computes them from its input). The predictors' CPU path does the same
    two steps with OpenCV (`promptseg.transforms.upscale_logits`)."""
    factor = img_size / masks.shape[-1]
    known = all(isinstance(v, int) for v in input_size)
    if known and factor == int(factor) and masks.shape[-1] == masks.shape[-2]:
        f = int(factor)
        rows = min(masks.shape[-2], -(-input_size[0] // f) + 1)
        cols = min(masks.shape[-1], -(-input_size[1] // f) + 1)
        masks = F.interpolate(masks[..., :rows, :cols], scale_factor=f, mode="bilinear", align_corners=False)
    else:
        masks = F.interpolate(masks, (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, size=(original_size[0], original_size[1]), mode="bilinear", align_corners=False)


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"
    family: str = "sam"  # "sam2" for SAM 2's models
    # SAM resizes an image's longest side to `img_size` and pads the rest (SAM 2: `Sam2`)
    square_input: bool = False
    # the returned low-res logits are clamped to +-this (None: not clamped)
    low_res_limit: float | None = None
    hq = False  # HQ-SAM (`promptseg.model.hq.SamHQ`): one mask per prompt, `hq_token_only` applies

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.pixel_stats = (tuple(pixel_mean), tuple(pixel_std))
        self.model_type: str | None = None  # the architecture's name, set by the loader
        # settings chosen for the loaded weights (promptseg.weights.WeightsSettings), set by the
        # loader; None: SAM's defaults
        self.weights_settings: Any = None
        self.reset_pixel_buffers()

    def reset_pixel_buffers(self) -> None:
        """(Re)create the unsaved mean/std buffers, e.g. after building on the meta device."""
        weight = next(self.parameters())
        device = torch.device("cpu") if weight.is_meta else weight.device
        for name, values in zip(("pixel_mean", "pixel_std"), self.pixel_stats):
            self.register_buffer(name, torch.tensor(values, device=device).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a (B, 3, h, w) image with h, w <= img_size and pad it to a square."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Preprocessed images (B, 3, S, S) -> the decoder's image embedding (B, C, h, w) and the
        higher-resolution levels it also reads (SAM 2), or None."""
        return self.image_encoder(x), None

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-res logits (B, M, 4h, 4w) -> logits at the original image size (`full_size_logits`)."""
        return full_size_logits(masks, input_size, original_size, self.img_size)

    @torch.no_grad()
    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, torch.Tensor]]:
        """Batched end-to-end prediction, with the same input/output records as SAM's release:
        each input has `image` (3, h, w) already resized, `original_size`, and optionally
        `point_coords`, `point_labels`, `boxes`, `mask_inputs` in the resized frame."""
        images = torch.stack([self.preprocess(rec["image"][None])[0] for rec in batched_input])
        embeddings, high_res = self.encode(images)
        outputs = []
        for i, (rec, emb) in enumerate(zip(batched_input, embeddings)):
            points = (rec["point_coords"], rec["point_labels"]) if "point_coords" in rec else None
            sparse, dense = self.prompt_encoder(points, rec.get("boxes"), rec.get("mask_inputs"))
            levels = None if high_res is None else tuple(f[i : i + 1] for f in high_res)
            low_res, iou = self.mask_decoder(
                emb[None], self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output, high_res=levels
            )
            masks = self.postprocess_masks(low_res, tuple(rec["image"].shape[-2:]), tuple(rec["original_size"]))
            outputs.append({"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res})
        return outputs
