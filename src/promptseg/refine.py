"""Classical refinement of a model's answer: OpenCV GrabCut seeded by the model's logits and
the prompts.

The model's full-size logits become GrabCut's starting labels: where the model is confident
(|logit| above `confident`) its label is kept fixed, elsewhere it is only a first guess that
GrabCut's colour models may overturn. The prompts are hard constraints: outside a box is
background, a foreground click's disk is object, a background click's disk is not. Without a box,
the search is kept to the model's mask and the clicks, widened by `margin` of their extent.

It sharpens boundaries and fills objects whose colours differ from their surroundings (the
bundled model's masks are 64 x 64 logits); it can lose regions that are defined by texture
rather than colour. MODEL_CARD.md has measured figures with and without it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .io import ImageLike, read_image
from .prompts import check_prompts

REFINERS = ("grabcut",)


def grabcut_refine(
    image: ImageLike,
    logits: np.ndarray,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    *,
    confident: float = 4.0,
    iterations: int = 5,
    max_side: int = 512,
    click_radius: int = 5,
    margin: float = 0.25,
) -> np.ndarray:
    """A refined bool mask (H, W) from the model's full-size logits (H, W) for `image`, e.g.
    `predict(..., return_logits=True)[0][k]`; a bool mask is taken as a first guess with no
    confident part; the answer itself is logits > 0 (SAM's mask threshold). Prompts are the ones
    the answer was asked with, in the image's pixel frame. GrabCut runs on the image scaled to at
    most `max_side` pixels."""
    rgb = read_image(image)
    size = rgb.shape[:2]
    logits = np.asarray(logits)
    if logits.ndim == 3 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.shape != size:
        raise ValueError(
            f"logits must be one full-size answer of shape {size} for this {size[1]}x{size[0]} image "
            f"(predict(..., return_logits=True)[0][k]), got shape {logits.shape}"
        )
    if logits.dtype == bool:
        logits = np.where(logits, 1.0, -1.0)
    logits = logits.astype(np.float32)
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values")
    if iterations < 1 or max_side < 16 or confident <= 0:
        raise ValueError(
            f"iterations must be >= 1, max_side >= 16 and confident > 0; got {iterations}, {max_side}, {confident}"
        )
    coords = labels = boxes = None
    if point_coords is not None or point_labels is not None or box is not None:
        coords, labels, boxes, _, n, _ = check_prompts(size, point_coords, point_labels, box)
        if n != 1:
            raise ValueError(f"grabcut_refine refines one answer at a time; got prompts for {n}")
        coords, labels = (coords[0], labels[0]) if coords is not None else (None, None)
        boxes = boxes[0] if boxes is not None else None

    s = min(1.0, max_side / max(size))
    if s < 1.0:
        small = (max(1, round(size[1] * s)), max(1, round(size[0] * s)))
        work_rgb = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        work_logits = cv2.resize(logits, small, interpolation=cv2.INTER_LINEAR)
    else:
        work_rgb, work_logits = rgb, logits
    h, w = work_logits.shape
    answer = work_logits > 0
    labels_map = np.where(answer, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels_map[work_logits > confident] = cv2.GC_FGD
    labels_map[work_logits < -confident] = cv2.GC_BGD

    keep = np.zeros((h, w), bool)  # where the object may be: the box, else near the answer and clicks
    if boxes is not None:
        x0, y0 = (max(0, int(np.floor(v * s))) for v in boxes[:2])
        x1, y1 = min(w - 1, int(np.ceil(boxes[2] * s))), min(h - 1, int(np.ceil(boxes[3] * s)))
        keep[y0 : y1 + 1, x0 : x1 + 1] = True
        if not answer[keep].any():  # nothing inside the box: start from the box, as GrabCut does
            labels_map[keep] = cv2.GC_PR_FGD
    else:
        extent = answer.copy()
        if coords is not None:
            for (x, y), lab in zip(coords, labels):
                if lab == 1:
                    extent[min(h - 1, int(y * s)), min(w - 1, int(x * s))] = True
        ys, xs = np.nonzero(extent)
        if len(xs) == 0:
            return logits > 0
        pad = int(margin * max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)) + 5
        keep[max(0, ys.min() - pad) : ys.max() + pad + 1, max(0, xs.min() - pad) : xs.max() + pad + 1] = True
    labels_map[~keep] = cv2.GC_BGD
    if coords is not None:
        r = max(1, round(click_radius * s))
        for (x, y), lab in zip(coords, labels):  # later clicks win where disks overlap
            centre = (min(w - 1, int(x * s)), min(h - 1, int(y * s)))
            cv2.circle(labels_map, centre, r, int(cv2.GC_FGD if lab == 1 else cv2.GC_BGD), -1)

    fg = (labels_map == cv2.GC_FGD) | (labels_map == cv2.GC_PR_FGD)
    if not fg.any() or fg.all():  # GrabCut needs both sides to learn its colour models
        return logits > 0
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut starts its colour models with k-means on OpenCV's RNG: same input, same answer
    try:
        cv2.grabCut(np.ascontiguousarray(work_rgb[..., ::-1]), labels_map, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # too few pixels of one side for its colour model: keep the model's answer
        return logits > 0
    refined = ((labels_map == cv2.GC_FGD) | (labels_map == cv2.GC_PR_FGD)).astype(np.float32)
    if s < 1.0:
        refined = cv2.resize(refined, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return refined > 0.5


def refine_mask(method: str, image: ImageLike, logits: np.ndarray, point_coords=None, point_labels=None,
                box=None) -> np.ndarray:
    """The answer refined by `method` (one of REFINERS) with its default settings."""
    if method not in REFINERS:
        raise ValueError(f"unknown refinement {method!r}; choose one of {', '.join(REFINERS)}")
    return grabcut_refine(image, logits, point_coords, point_labels, box)


def answer_masks(logits: np.ndarray, threshold: float, refine: str | None = None, image: ImageLike | None = None,
                 point_coords=None, point_labels=None, box=None) -> np.ndarray:
    """Masks (C, H, W) from full-size logits (C, H, W) of one prompt: thresholded, or each
    refined by `refine` with the image and the prompts."""
    if refine is None:
        return logits > threshold
    return np.stack([refine_mask(refine, image, lg, point_coords, point_labels, box) for lg in logits])
