"""Checking prompts given in an original image's pixel frame (no torch: the ONNX Runtime path
uses this module too)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {type(value).__name__}") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values: {arr.tolist() if arr.size <= 8 else '...'}")
    return arr


def check_flag(value: Any, name: str) -> bool:
    """A yes/no option as a bool; ValueError for anything else ("yes", 1, None ...), which
    would otherwise be taken by its truth value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def check_prompts(
    original_size: tuple[int, int],
    point_coords=None,
    point_labels=None,
    box=None,
    mask_input=None,
    mask_input_size: tuple[int, int] = (256, 256),
    multimask_output: bool = True,
):
    """Validate prompts given in the original image frame.

    Returns (coords (B, N, 2), labels (B, N), boxes (B, 4) clipped to the image, masks
    (B, 1, h, w)) with None for absent prompts, the batch size, and whether the call was batched.
    Raises ValueError naming the bad value."""
    check_flag(multimask_output, "multimask_output")
    if point_coords is None and box is None and mask_input is None:
        raise ValueError("no prompt given: pass point_coords with point_labels, a box, or a mask_input")
    if (point_coords is None) != (point_labels is None):
        raise ValueError("point_coords and point_labels go together: pass both or neither")
    coords = labels = boxes = masks = None
    batched = False
    if point_coords is not None:
        coords, labels, batched = _check_points(original_size, point_coords, point_labels)
    if box is not None:
        boxes, many = _check_boxes(original_size, box)
        batched = batched or many
    if mask_input is not None:
        masks, many = _check_masks(mask_input, tuple(mask_input_size))
        batched = batched or many
    sizes = {name: len(a) for name, a in (("points", coords), ("boxes", boxes), ("mask_input", masks)) if a is not None}
    n = max(sizes.values())
    if any(k not in (1, n) for k in sizes.values()):
        raise ValueError(f"batched prompts disagree in count: {sizes}; give each the same batch size")
    return coords, labels, boxes, masks, n, batched


def _check_points(original_size, point_coords, point_labels) -> tuple[np.ndarray, np.ndarray, bool]:
    """Points (B, N, 2) and labels (B, N), and whether they came batched."""
    h, w = original_size
    coords = _as_array(point_coords, "point_coords")
    labels = _as_array(point_labels, "point_labels")
    batched = False
    if coords.ndim == 2 and coords.shape[1] == 2:
        coords, expect_labels = coords[None], (coords.shape[0],)
    elif coords.ndim == 3 and coords.shape[2] == 2:
        batched, expect_labels = True, coords.shape[:2]
    else:
        raise ValueError(f"point_coords must be Nx2 (or BxNx2 for a batch), got shape {coords.shape}")
    if coords.shape[-2] == 0 or coords.shape[0] == 0:
        raise ValueError("point_coords holds no points; give at least one (x, y), or pass None for no points")
    if labels.shape != expect_labels:
        raise ValueError(f"point_labels must have shape {expect_labels} to match point_coords, got {labels.shape}")
    labels = labels.reshape(coords.shape[:2])
    allowed = (0, 1, -1) if batched else (0, 1)
    bad = labels[~np.isin(labels, allowed)]
    if bad.size:
        raise ValueError(
            f"point_labels must be 1 (foreground) or 0 (background){' or -1 (padding)' if batched else ''}, "
            f"got {bad[0]:g}"
        )
    real = labels != -1
    xs, ys = coords[..., 0][real], coords[..., 1][real]
    outside = (xs < 0) | (xs > w) | (ys < 0) | (ys > h)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(
            f"point ({xs[i]:g}, {ys[i]:g}) is outside the {w}x{h} image; points are (x, y) pixels of the original image"
        )
    return coords, labels, batched


def _check_boxes(original_size, box) -> tuple[np.ndarray, bool]:
    """Boxes (B, 4) clipped to the image, and whether there are several."""
    h, w = original_size
    boxes = _as_array(box, "box")
    if boxes.shape == (4,):
        boxes = boxes[None]
    elif boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.shape[0] == 0:
        raise ValueError("box holds no boxes; give at least one [x0, y0, x1, y1], or pass None for no box")
    elif not (boxes.ndim == 2 and boxes.shape[1] == 4):
        raise ValueError(f"box must be [x0, y0, x1, y1] (or Bx4 for a batch), got shape {boxes.shape}")
    inverted = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if inverted.any():
        raise ValueError(f"box {boxes[int(np.argmax(inverted))].tolist()} is empty or inverted; use x0 < x1 and y0 < y1")
    off = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
    if off.any():
        raise ValueError(f"box {boxes[int(np.argmax(off))].tolist()} lies wholly outside the {w}x{h} image")
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return boxes, boxes.shape[0] > 1


def _check_masks(mask_input, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Mask inputs (B, 1, h, w), and whether there are several."""
    masks = _as_array(mask_input, "mask_input").astype(np.float32)
    if masks.shape == size:
        return masks[None, None], False
    if masks.shape == (1, *size):
        return masks[None], False
    if masks.ndim == 4 and masks.shape[1:] == (1, *size) and masks.shape[0] > 0:
        return masks, masks.shape[0] > 1
    raise ValueError(
        f"mask_input must be 1x{size[0]}x{size[1]} low-res logits (e.g. low_res_logits from an earlier "
        f"predict), got shape {masks.shape}"
    )
