"""SAM 2's image model: a Hiera encoder whose three feature levels all reach the mask decoder,
ImageNet normalisation of a [0, 1] image resized to the square input (no padding), and logits
brought straight to the original size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hiera import HieraImageEncoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Sam2(Sam):
    """SAM 2 (and 2.1) for images. Its input is RGB in [0, 1], resized to img_size x img_size."""

    family = "sam2"
    square_input = True
    low_res_limit = 32.0

    def __init__(self, image_encoder: HieraImageEncoder, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, IMAGENET_MEAN, IMAGENET_STD)
        # what the video model adds to a frame without memories; an image always is one
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, prompt_encoder.embed_dim))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a (B, 3, S, S) image in [0, 1] (already resized to the square input)."""
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The 16x level plus the no-memory embedding, and the 4x and 8x levels through the
        decoder's `conv_s0` / `conv_s1`."""
        s0, s1, top = self.image_encoder(x)
        decoder = self.mask_decoder
        # channels last: the decoder's upscaling reads these a pixel row (all channels) at a time
        high_res = tuple(f.contiguous(memory_format=torch.channels_last) for f in (decoder.conv_s0(s0),
                                                                                    decoder.conv_s1(s1)))
        return top + self.no_mem_embed.view(1, -1, 1, 1), high_res

    def postprocess_masks(self, masks: torch.Tensor, input_size, original_size) -> torch.Tensor:
        """Low-res logits (B, M, h, w) -> (B, M, H, W) at `original_size`, one bilinear step."""
        return F.interpolate(masks, size=(original_size[0], original_size[1]), mode="bilinear", align_corners=False)
