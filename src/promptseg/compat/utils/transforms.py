"""`segment_anything.utils.transforms`: resizing to the model's input side, with the torch
variants and the static shape helper that scripts call."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...transforms import ResizeLongestSide as _Resize
from ...transforms import preprocess_shape


class ResizeLongestSide(_Resize):
    """promptseg's `ResizeLongestSide` with the rest of the reference's methods."""

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        return preprocess_shape(oldh, oldw, long_side_length)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """A (B, 3, H, W) float batch resized so its longest side is `target_length`
        (bilinear, antialiased)."""
        size = preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)


__all__ = ["ResizeLongestSide"]
