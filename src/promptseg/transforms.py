"""Resizing an image so its longest side fits the model, and mapping coordinates to match."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .io import check_image_shape

if TYPE_CHECKING:  # torch is not needed at run time here: the ONNX Runtime path uses this module
    import torch


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) after scaling the longest side to `long_side`, rounded to the nearest pixel."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ResizeLongestSide:
    """Maps images, points and boxes from the original frame into the model's input frame."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> resized with PIL's bilinear filter (as SAM's release does). Raises
        ValueError for a shape the model cannot take (`promptseg.io.check_image_shape`)."""
        check_image_shape(image.shape[0], image.shape[1])
        h, w = preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        old_h, old_w = original_size
        new_h, new_w = preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=float, copy=True)
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        old_h, old_w = original_size
        new_h, new_w = preprocess_shape(old_h, old_w, self.target_length)
        coords = coords.clone().float()
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


class ResizeSquare:
    """SAM 2's frame: the image resized to `target_length` on both sides (its aspect not kept),
    so coordinates scale by each axis's own factor."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        h, w = original_size
        coords = np.array(coords, dtype=float, copy=True)
        coords[..., 0] = coords[..., 0] / w * self.target_length
        coords[..., 1] = coords[..., 1] / h * self.target_length
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)


def _triangle_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of an antialiased bilinear resize along one axis: a triangle
    filter widened by the downscaling factor, normalised over the input samples it covers (the
    filter torch's `interpolate(..., antialias=True)` and PIL's bilinear resampling use)."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    centres = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((centres - support + 0.5).astype(np.int64), 0)
    last = np.minimum((centres + support + 0.5).astype(np.int64), in_size)
    j = np.arange(in_size)
    w = np.clip(1.0 - np.abs((j[None, :] - centres[:, None] + 0.5) * inv), 0.0, None)
    w[(j[None, :] < first[:, None]) | (j[None, :] >= last[:, None])] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """SAM 2's input without torch: an (H, W, 3) image resized to (size, size, 3) float32 with
    antialiased bilinear filtering, values kept in the image's range (torch's
    `interpolate(..., mode="bilinear", antialias=True)` to within float rounding)."""
    check_image_shape(image.shape[0], image.shape[1])
    wy = _triangle_weights(image.shape[0], size).astype(np.float32)
    wx = _triangle_weights(image.shape[1], size).astype(np.float32)
    img = np.asarray(image, dtype=np.float32)
    return np.stack([wy @ img[..., c] @ wx.T for c in range(img.shape[2])], axis=-1)


def fill_holes_and_sprinkles(low_res: np.ndarray, threshold: float = 0.0, max_hole_area: float = 0.0,
                             max_sprinkle_area: float = 0.0) -> np.ndarray:
    """SAM 2's clean-up of low-res logits (B, M, h, w), before they are brought to full size:
    background regions (logits <= threshold, 8-connected) of at most `max_hole_area` low-res
    pixels become foreground (threshold + 10), and foreground regions of at most
    `max_sprinkle_area` background (threshold - 10). Both are found on the logits as given."""
    import cv2

    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return np.asarray(low_res, dtype=np.float32)
    out = np.array(low_res, dtype=np.float32, copy=True)
    for idx in np.ndindex(*out.shape[:-2]):
        logits = np.asarray(low_res[idx], dtype=np.float32)
        for limit, region, value in ((max_hole_area, logits <= threshold, threshold + 10.0),
                                     (max_sprinkle_area, logits > threshold, threshold - 10.0)):
            if limit <= 0:
                continue
            n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
            small = np.flatnonzero(stats[1:n, cv2.CC_STAT_AREA] <= limit) + 1
            if small.size:
                out[idx][np.isin(labels, small)] = value
    return out


def check_clean_up(max_hole_area: float, max_sprinkle_area: float) -> None:
    """ValueError unless both of `fill_holes_and_sprinkles`'s areas are numbers >= 0."""
    for name, value in (("max_hole_area", max_hole_area), ("max_sprinkle_area", max_sprinkle_area)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number of low-res pixels >= 0 (0: off), got {value!r}")


def input_frame_logits(low_res: np.ndarray, input_size: tuple[int, int], img_size: int) -> np.ndarray:
    """SAM's first bilinear step: low-res logits (B, M, h, w) -> (B, M, ih, iw) logits over the
    unpadded part of the model's input square. Only the low-res rows and columns that part needs
    are read: at the same scale, bilinear sampling gives the same values."""
    import cv2

    b, m, lh, lw = low_res.shape
    f = img_size // lw
    ih, iw = input_size
    rows, cols = min(lh, -(-ih // f) + 1), min(lw, -(-iw // f) + 1)
    logits = np.asarray(low_res, dtype=np.float32)
    out = np.empty((b, m, ih, iw), dtype=np.float32)
    for i in range(b):
        for j in range(m):
            up = cv2.resize(logits[i, j, :rows, :cols], (cols * f, rows * f), interpolation=cv2.INTER_LINEAR)
            out[i, j] = up[:ih, :iw]
    return out


def original_frame_logits(
    logits: np.ndarray, original_size: tuple[int, int], threshold: float = 0.0, return_logits: bool = False
) -> np.ndarray:
    """SAM's second bilinear step: input-frame logits (B, M, ih, iw) -> masks (bool) or logits
    (B, M, H, W) at the original image size."""
    import cv2

    b, m = logits.shape[:2]
    oh, ow = original_size
    out = np.empty((b, m, oh, ow), dtype=np.float32 if return_logits else bool)
    for i in range(b):
        for j in range(m):
            full = cv2.resize(logits[i, j], (ow, oh), interpolation=cv2.INTER_LINEAR)
            if return_logits:
                out[i, j] = full
            else:
                np.greater(full, threshold, out=out[i, j])
    return out


def upscale_logits(
    low_res: np.ndarray,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int,
    threshold: float = 0.0,
    return_logits: bool = False,
) -> np.ndarray:
    """Low-res logits (B, M, h, w) -> masks (bool) or logits at the original image size: SAM's
    two bilinear steps (upsample to the padded input square, keep the unpadded part, resize that
    to the original size), per mask with OpenCV, which is several times faster than torch's
    kernel on a CPU."""
    return original_frame_logits(
        input_frame_logits(low_res, input_size, img_size), original_size, threshold, return_logits
    )


def full_size_logits_np(
    low_res: np.ndarray,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int,
    threshold: float = 0.0,
    return_logits: bool = False,
    square: bool = False,
    max_hole_area: float = 0.0,
    max_sprinkle_area: float = 0.0,
) -> np.ndarray:
    """Low-res logits (B, M, h, w) -> full-size masks (bool) or logits, as the predictors bring
    them there: SAM 2's hole and speck clean-up when asked for, then SAM 2's one bilinear step
    from the square (`square`) or SAM's two (`upscale_logits`)."""
    low_res = fill_holes_and_sprinkles(low_res, threshold, max_hole_area, max_sprinkle_area)
    if square:
        return original_frame_logits(low_res, original_size, threshold, return_logits)
    return upscale_logits(low_res, input_size, original_size, img_size, threshold, return_logits)
