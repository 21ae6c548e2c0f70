"""Pure functions on masks and boxes: run-length encodings, boxes, stability, crops, clean-up.

Masks are bool arrays (H, W) or tensors (N, H, W); boxes are XYXY with inclusive pixel
coordinates for mask extents, as SAM's automatic generator reports them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

# --- point grids and crops ----------------------------------------------------------------


def point_grid(n_per_side: int) -> np.ndarray:
    """n x n points at cell centres of the unit square, x varying fastest: (n*n, 2)."""
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer, each layer's grid `scale_per_layer` times sparser per side."""
    return [point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def crop_boxes(image_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """The whole image, then for layer i a (2^i x 2^i) grid of overlapping crops.
    Returns XYXY boxes and the layer of each."""
    h, w = image_size
    boxes, layers = [[0, 0, w, h]], [0]
    short = min(h, w)
    for layer in range(n_layers):
        n = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + h) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in itertools.product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
            layers.append(layer + 1)
    return boxes, layers


# --- scores and boxes ---------------------------------------------------------------------


def stability_score_np(logits: np.ndarray, threshold: float, offset: float) -> np.float32:
    """IoU between the mask thresholded at threshold+offset and at threshold-offset, for one
    (H, W) logit map; float32, as SAM's generator computes it (NaN when both are empty)."""
    inner = np.count_nonzero(logits > (threshold + offset))
    outer = np.count_nonzero(logits > (threshold - offset))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float32(inner) / np.float32(outer)


def mask_to_box(mask: np.ndarray) -> list[int]:
    """XYXY (inclusive) of one bool (H, W) mask; [0, 0, 0, 0] when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


def box_xyxy_to_xywh(box) -> list:
    x0, y0, x1, y1 = (v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def near_crop_edge(box: list[int], crop_box: list[int], image_box: list[int], atol: float = 20.0) -> bool:
    """Whether a box (XYXY, crop coordinates) comes within `atol` of a crop edge that is not
    also an image edge: such a mask is probably cut off by the crop."""
    x0, y0 = crop_box[:2]
    full = (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)
    return any(abs(v - c) <= atol and not abs(v - e) <= atol for v, c, e in zip(full, crop_box, image_box))


def uncrop_boxes(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0 = crop_box[:2]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0 = crop_box[:2]
    return points + torch.tensor([x0, y0], device=points.device)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices kept by non-maximum suppression over XYXY boxes, best score first."""
    from torchvision.ops import batched_nms as tv_batched_nms

    idxs = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    return tv_batched_nms(boxes.float(), scores.float(), idxs, iou_threshold=iou_threshold)


# --- run-length encodings -------------------------------------------------------------------


def mask_to_rle(mask: np.ndarray, offset: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None) -> dict:
    """Uncompressed COCO RLE ({"size": [h, w], "counts": [...]}, column-major runs starting
    with background) of a bool mask placed at `offset` (x, y) inside an image of `size` (h, w)."""
    mask = np.asarray(mask, dtype=bool)
    mh, mw = mask.shape
    h, w = size if size is not None else (mh, mw)
    x0, y0 = offset
    if (x0, y0, mh, mw) != (0, 0, h, w):
        full = np.zeros((h, w), dtype=bool)
        full[y0 : y0 + mh, x0 : x0 + mw] = mask
        mask = full
    flat = mask.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode an uncompressed RLE to a bool (h, w) mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(w, h).T


def rle_area(rle: dict) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_rle(rle: dict) -> dict:
    """Uncompressed RLE -> COCO compressed RLE with a str `counts` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    out = mask_utils.frPyObjects(rle, h, w)
    out["counts"] = out["counts"].decode("utf-8")
    return out


def decode_coco_rle(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    obj = {"size": rle["size"], "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    if isinstance(counts, list):
        obj = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(obj).astype(bool)


# --- clean-up ---------------------------------------------------------------------------------


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") smaller than `area_thresh` pixels.
    Returns the mask and whether it changed."""
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = (holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[1:, -1]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:  # every island is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
