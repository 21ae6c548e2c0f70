"""Zero-shot edge detection with a promptable model, following the SAM paper's appendix: a regular
grid of single foreground clicks, every one of the three candidate masks kept (no IoU or stability
filter), duplicates removed by mask NMS (on the low-res masks), the Sobel response of each mask's unthresholded
probability map kept only on the mask's outer boundary, the pixel-wise maximum over masks,
normalised to [0, 1], then thinned by edge non-maximum suppression."""

from __future__ import annotations

import numpy as np

from .. import masks as M
from ..io import ImageLike, read_image

NMS_IOU = 0.7  # masks overlapping a better-scored kept mask by more than this are duplicates


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Greedy NMS on masks (n, H, W) bool by mask IoU, best `scores` first. Returns the kept
    indices, best first."""
    import torch

    n = len(masks)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    flat = torch.from_numpy(np.ascontiguousarray(masks).reshape(n, -1)).float()
    inter = flat @ flat.T
    area = inter.diagonal()
    union = area[:, None] + area[None, :] - inter
    iou = (inter / union.clamp_min(1)).numpy()
    keep, dropped = [], np.zeros(n, bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if dropped[i]:
            continue
        keep.append(i)
        dropped |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def outer_boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels outside `mask` (bool (H, W)) that touch it (8-neighbourhood)."""
    import cv2

    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return grown & ~mask


def edge_nms(edges: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Thins an edge map (H, W) to one-pixel-wide ridges: a pixel stays only if it is at least as
    strong as the map one pixel away on both sides across the ridge. The direction across comes
    from the Hessian of the map smoothed with a Gaussian of `sigma` px; the neighbours are read
    bilinearly."""
    import cv2

    e = np.asarray(edges, dtype=np.float32)
    s = cv2.GaussianBlur(e, (0, 0), sigma) if sigma > 0 else e
    dxx = cv2.Sobel(s, cv2.CV_32F, 2, 0, ksize=3)
    dyy = cv2.Sobel(s, cv2.CV_32F, 0, 2, ksize=3)
    dxy = cv2.Sobel(s, cv2.CV_32F, 1, 1, ksize=3)
    # across the ridge: the Hessian's eigenvector of the eigenvalue largest in magnitude (the
    # curvature across the ridge, negative on it and positive beside it). `first` is the
    # direction of the algebraically larger eigenvalue, the larger in magnitude when the trace is
    # not negative; otherwise the normal is perpendicular to it
    first = 0.5 * np.arctan2(2 * dxy, dxx - dyy)
    normal = np.where(dxx + dyy >= 0, first, first + np.pi / 2)
    nx, ny = np.cos(normal).astype(np.float32), np.sin(normal).astype(np.float32)
    h, w = e.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    keep = np.ones(e.shape, bool)
    for sign in (1.0, -1.0):
        side = cv2.remap(e, xs + sign * nx, ys + sign * ny, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        keep &= e >= side
    return np.where(keep, e, 0.0).astype(np.float32)


def sam_edge_map(predictor, image: ImageLike, points_per_side: int = 16, nms_iou: float = NMS_IOU) -> np.ndarray:
    """The edge map (H, W) in [0, 1] of `image` by the paper's protocol (module docstring), with
    any predictor of the contract (`decode_points` and `postprocess`)."""
    import cv2

    image = read_image(image)
    predictor.set_image(image)
    state = predictor.image_state
    h, w = state.original_size
    points = M.point_grid(points_per_side) * np.array([w, h], dtype=np.float64)
    low, iou = predictor.decode_points(state, points)  # (n, 3, lh, lw), (n, 3)
    low = np.asarray(low.detach().float().cpu() if hasattr(low, "detach") else low, dtype=np.float32)
    scores = np.asarray(iou.detach().float().cpu() if hasattr(iou, "detach") else iou, dtype=np.float32).reshape(-1)
    low = low.reshape(-1, 1, *low.shape[-2:])
    # duplicates judged on the low-res masks over the image's part of the model's input (the
    # full-size masks of 768 candidates would take gigabytes for a large photo)
    ih, iw = state.input_size
    side = max(ih, iw)
    rows, cols = -(-ih * low.shape[-2] // side), -(-iw * low.shape[-1] // side)
    keep = mask_nms(low[:, 0, :rows, :cols] > 0, scores, nms_iou)
    edges = np.zeros((h, w), dtype=np.float32)
    for start in range(0, len(keep), 16):
        logits = predictor.postprocess(low[keep[start : start + 16]], state, return_logits=True)[:, 0]
        for one in logits:
            prob = (1.0 / (1.0 + np.exp(-one))).astype(np.float32)
            strength = np.hypot(cv2.Sobel(prob, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(prob, cv2.CV_32F, 0, 1, ksize=3))
            strength[~outer_boundary(one > 0)] = 0
            np.maximum(edges, strength, out=edges)
    top = float(edges.max())
    if top > 0:
        edges /= top
    return edge_nms(edges)


def _grey(image: ImageLike) -> np.ndarray:
    import cv2

    return cv2.cvtColor(read_image(image), cv2.COLOR_RGB2GRAY)


def sobel_edge_map(image: ImageLike, sigma: float = 1.0) -> np.ndarray:
    """A classical row: the Sobel gradient magnitude of the grey image (smoothed with a Gaussian of
    `sigma` px), normalised to [0, 1] and thinned by `edge_nms`."""
    import cv2

    grey = _grey(image).astype(np.float32) / 255.0
    if sigma > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), sigma)
    strength = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    top = float(strength.max())
    return edge_nms(strength / top if top > 0 else strength)


def canny_edge_map(image: ImageLike, sigma: float = 1.0, levels: int = 32, low_ratio: float = 0.4) -> np.ndarray:
    """A classical row: Canny's detector (Gaussian of `sigma` px, L2 gradient, non-maximum
    suppression, hysteresis with the low threshold at `low_ratio` of the high one) run at
    `levels` high thresholds evenly spaced up to the image's largest gradient; each pixel's
    strength is the highest fraction at which it is still an edge. Canny's edges grow as its
    thresholds fall, so cutting this map at a fraction gives Canny's answer there."""
    import cv2

    grey = _grey(image)
    if sigma > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), sigma)
    g = grey.astype(np.float32)
    top = float(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)).max())
    edges = np.zeros(grey.shape, np.float32)
    if top == 0:
        return edges
    for k in range(1, levels + 1):
        high = top * k / (levels + 1)
        found = cv2.Canny(grey, low_ratio * high, high, apertureSize=3, L2gradient=True) > 0
        edges[found] = k / (levels + 1)
    return edges
