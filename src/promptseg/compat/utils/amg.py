"""`segment_anything.utils.amg`: the helpers of automatic mask generation that scripts call,
with the reference's names, arguments and return types, on promptseg's mask functions."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ... import masks as M


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: list[int], orig_box: list[int],
                          atol: float = 20.0) -> torch.Tensor:
    """Per XYXY box in crop coordinates: whether it touches the crop's edge where that edge is
    not the image's own (B,) bool."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    image = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    placed = M.uncrop_boxes(boxes, crop_box).float()
    at_crop = torch.isclose(placed, crop[None, :], atol=atol, rtol=0)
    at_image = torch.isclose(placed, image[None, :], atol=atol, rtol=0)
    return torch.any(at_crop & ~at_image, dim=1)


def box_xyxy_to_xywh(box_xyxy: torch.Tensor) -> torch.Tensor:
    out = box_xyxy.clone()
    out[..., 2] = out[..., 2] - out[..., 0]
    out[..., 3] = out[..., 3] - out[..., 1]
    return out


def batch_iterator(batch_size: int, *args) -> Generator[list[Any], None, None]:
    """Slices of every argument, `batch_size` items at a time."""
    if not args or any(len(a) != len(args[0]) for a in args):
        raise ValueError("batch_iterator needs arguments of one length")
    for start in range(0, len(args[0]), batch_size):
        yield [a[start : start + batch_size] for a in args]


def mask_to_rle_pytorch(tensor: torch.Tensor) -> list[dict[str, Any]]:
    """(B, H, W) bool masks -> uncompressed RLEs (column-major runs, background first)."""
    return [M.mask_to_rle(m) for m in tensor.detach().cpu().numpy().astype(bool)]


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    return M.rle_to_mask(rle)


def area_from_rle(rle: dict[str, Any]) -> int:
    return M.rle_area(rle)


def calculate_stability_score(masks: torch.Tensor, mask_threshold: float, threshold_offset: float) -> torch.Tensor:
    """IoU of each mask of logits (..., H, W) thresholded at mask_threshold +/- threshold_offset."""
    inner = (masks > (mask_threshold + threshold_offset)).flatten(-2).sum(-1, dtype=torch.int32)
    outer = (masks > (mask_threshold - threshold_offset)).flatten(-2).sum(-1, dtype=torch.int32)
    return inner / outer


def build_point_grid(n_per_side: int) -> np.ndarray:
    return M.point_grid(n_per_side)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    return M.layer_point_grids(n_per_side, n_layers, scale_per_layer)


def generate_crop_boxes(im_size: tuple[int, ...], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    return M.crop_boxes(tuple(im_size[:2]), n_layers, overlap_ratio)


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    return M.uncrop_boxes(boxes, crop_box)


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    return M.uncrop_points(points, crop_box)


def uncrop_masks(masks: torch.Tensor, crop_box: list[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """Masks of a crop placed in the whole image (zeros around)."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    return F.pad(masks, (x0, orig_w - x1, y0, orig_h - y1), value=0)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    return M.remove_small_regions(mask, area_thresh, mode)


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    return M.coco_rle(uncompressed_rle)


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (..., 4) of bool masks (..., H, W); an empty mask's box is [0, 0, 0, 0]."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device)
    h, w = masks.shape[-2:]
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ys, -1).amax(-1)
    top = torch.where(rows, ys, h).amin(-1)
    right = torch.where(cols, xs, -1).amax(-1)
    left = torch.where(cols, xs, w).amin(-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = (right < left) | (bottom < top)
    return boxes * (~empty).unsqueeze(-1)
