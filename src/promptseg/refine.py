"""Refinement of a model's answer: a closer look by the model itself (zoom), and OpenCV GrabCut
seeded by the model's logits and the prompts; `zoom+grabcut` runs one after the other.

Zoom: the crop around the box, or around the answer and its clicks, is embedded and asked the
same prompts again, so a small object fills the model's input instead of a few of its low-res
cells (the bundled model sees 256 px and answers with 64 x 64 logits). It costs one more image
embedding per answer.

GrabCut: the model's full-size logits become GrabCut's starting labels: where the model is
confident (|logit| above `confident`) its label is kept fixed, elsewhere it is only a first guess
that GrabCut's colour models may overturn. The prompts are hard constraints: outside a box is
background, a foreground click's disk is object, a background click's disk is not. Without a box,
the search is kept to the model's mask and the clicks, widened by `margin` of their extent. It
sharpens boundaries and fills objects whose colours differ from their surroundings; it can lose
regions that are defined by texture rather than colour.

MODEL_CARD.md has measured figures with and without each.
"""

from __future__ import annotations

import cv2
import numpy as np

from .io import ImageLike, read_image
from .prompts import check_prompts
from .transforms import preprocess_shape

REFINERS = ("grabcut", "zoom", "zoom+grabcut")


def _check_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One full-size answer as float32 logits (H, W); a bool mask becomes +-1."""
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
    return logits


def _one_prompt(size, point_coords, point_labels, box, who: str):
    """The checked prompts of one answer: coords (N, 2), labels (N,), box (4,), None where absent."""
    if point_coords is None and point_labels is None and box is None:
        return None, None, None
    coords, labels, boxes, _, n, _ = check_prompts(size, point_coords, point_labels, box)
    if n != 1:
        raise ValueError(f"{who} refines one answer at a time; got prompts for {n}")
    coords, labels = (coords[0], labels[0]) if coords is not None else (None, None)
    return coords, labels, (boxes[0] if boxes is not None else None)


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
    logits = _check_logits(logits, size)
    if iterations < 1 or max_side < 16 or confident <= 0:
        raise ValueError(
            f"iterations must be >= 1, max_side >= 16 and confident > 0; got {iterations}, {max_side}, {confident}"
        )
    coords, labels, boxes = _one_prompt(size, point_coords, point_labels, box, "grabcut_refine")

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


def logits_to_mask_input(logits: np.ndarray, img_size: int, mask_input_size: tuple[int, int],
                         pad_value: float = -20.0, square: bool = False) -> np.ndarray:
    """Full-size logits (H, W) -> a mask input (1, h, w) in the model's low-res frame: resized as
    the image is (longest side to `img_size`), padded to the square, then area-averaged down;
    with `square` (SAM 2's frame), stretched to the square as the image is."""
    h, w = logits.shape
    if square:
        stretched = cv2.resize(logits.astype(np.float32), (img_size, img_size), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(stretched, (mask_input_size[1], mask_input_size[0]), interpolation=cv2.INTER_AREA)[None]
    ih, iw = preprocess_shape(h, w, img_size)
    square = np.full((img_size, img_size), pad_value, np.float32)
    square[:ih, :iw] = cv2.resize(logits.astype(np.float32), (iw, ih), interpolation=cv2.INTER_LINEAR)
    low = cv2.resize(square, (mask_input_size[1], mask_input_size[0]), interpolation=cv2.INTER_AREA)
    return low[None]


def zoom_window(size: tuple[int, int], extent: np.ndarray, img_size: int, *, context: float = 1.5,
                min_side: float = 0.4, max_fraction: float = 0.8) -> tuple[int, int, int, int] | None:
    """The square crop (x0, y0, x1, y1), end exclusive, that shows `extent` (x0, y0, x1, y1) with
    `context` times its longest side, at least `min_side` x `img_size` pixels (so the crop is
    enlarged at most 1 / min_side times), shifted to lie in the image; None when it would cover
    `max_fraction` of the image's longest side or more (a closer look would show nothing new)."""
    h, w = size
    side = max(float(extent[2] - extent[0] + 1), float(extent[3] - extent[1] + 1)) * context
    side = max(side, min_side * img_size)
    if side >= max_fraction * max(h, w):
        return None
    s = int(round(side))
    cx, cy = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2
    x0 = min(max(0, int(round(cx - s / 2))), max(0, w - s))
    y0 = min(max(0, int(round(cy - s / 2))), max(0, h - s))
    return x0, y0, min(w, x0 + s), min(h, y0 + s)


def zoom_refine(
    predictor,
    image: ImageLike,
    logits: np.ndarray,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    *,
    context: float = 1.5,
    min_side: float = 0.4,
    max_fraction: float = 0.8,
    keep: str = "best",
) -> np.ndarray:
    """Full-size logits (H, W): the answer `logits` (H, W) to these prompts, looked at again
    closer. The crop around the box (or around the answer and its foreground clicks, when there
    is no box) is embedded by `predictor` (torch or ONNX Runtime) and asked the same prompts, with
    the answer as mask input when it was asked with clicks; outside the crop nothing is object.
    Small objects gain most: at the model's input size they span few low-res cells. The
    predictor's embedded image is restored afterwards; answers with no closer view (the crop
    would be most of the image) come back unchanged.

    A lone click is asked as SAM asks one click, for three candidates: `keep="best"` keeps the
    best-scored (the answer to keep), `keep="same"` the one most like this answer (when each of
    several candidates is refined, so that they stay distinct)."""
    if keep not in ("best", "same"):
        raise ValueError(f"keep must be 'best' or 'same', got {keep!r}")
    rgb = read_image(image)
    size = rgb.shape[:2]
    logits = _check_logits(logits, size)
    coords, labels, boxes = _one_prompt(size, point_coords, point_labels, box, "zoom_refine")
    if coords is None and boxes is None:
        raise ValueError("zoom_refine needs the prompts the answer was asked with: clicks, a box, or both")
    img_size, mask_input_size = predictor.img_size, predictor.mask_input_size
    # what the crop must show: the box's corners (else the answer's pixels) and the foreground clicks
    shown = boxes.reshape(2, 2) if boxes is not None else np.argwhere(logits > 0)[:, ::-1]
    if coords is not None:
        shown = np.concatenate([shown, coords[labels == 1]])
    if len(shown) == 0:
        return logits
    extent = np.concatenate([shown.min(0), shown.max(0)])
    window = zoom_window(size, extent, img_size, context=context, min_side=min_side, max_fraction=max_fraction)
    if window is None:
        return logits
    x0, y0, x1, y1 = window
    kw = {}
    if coords is not None:  # background clicks outside the crop are left out
        inside = (coords[:, 0] >= x0) & (coords[:, 0] < x1) & (coords[:, 1] >= y0) & (coords[:, 1] < y1)
        if inside.any():
            kw["point_coords"] = coords[inside] - np.array([x0, y0])
            kw["point_labels"] = labels[inside]
    if boxes is not None:
        b = boxes - np.array([x0, y0, x0, y0])
        kw["box"] = np.clip(b, 0, [x1 - x0 - 1, y1 - y0 - 1, x1 - x0 - 1, y1 - y0 - 1])
    # A lone click is asked as SAM asks one click (three masks, the best-scored kept); answers to
    # several clicks carry their history, so the answer goes in as the mask input, as in SAM's
    # refinement loop; a box alone is asked as it was.
    lone_click = boxes is None and coords is not None and len(coords) == 1 and "point_coords" in kw
    if coords is not None and not lone_click:
        kw["mask_input"] = logits_to_mask_input(logits[y0:y1, x0:x1], img_size, mask_input_size,
                                                square=getattr(predictor, "square_input", False))
    saved = predictor.image_state if predictor.is_image_set else None
    try:
        predictor.set_image(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        crop_logits, scores, _ = predictor.predict(**kw, multimask_output=lone_click, return_logits=True)
        if len(crop_logits) > 1:
            k = int(np.argmax(scores))
            if keep == "same":
                was = logits[y0:y1, x0:x1] > 0
                k = int(np.argmax([np.count_nonzero(was & (c > 0)) / max(1, np.count_nonzero(was | (c > 0)))
                                   for c in crop_logits]))
            crop_logits = crop_logits[k : k + 1]
    finally:
        predictor.image_state = saved
    out = np.minimum(logits, 0.0)  # outside the crop nothing is object (0 is below SAM's threshold test)
    out[y0:y1, x0:x1] = crop_logits[0]
    return out


def refine_mask(method: str, image: ImageLike, logits: np.ndarray, point_coords=None, point_labels=None,
                box=None, predictor=None, keep: str = "best") -> np.ndarray:
    """The answer refined by `method` (one of REFINERS) with its default settings; the zoom
    methods embed their crop with `predictor` (the one that gave the answer), `keep` as in
    `zoom_refine`."""
    if method not in REFINERS:
        raise ValueError(f"unknown refinement {method!r}; choose one of {', '.join(REFINERS)}")
    if method.startswith("zoom"):
        if predictor is None:
            raise ValueError(f"refinement {method!r} asks the model again: pass the predictor")
        logits = zoom_refine(predictor, image, logits, point_coords, point_labels, box, keep=keep)
        if method == "zoom":
            return logits > 0
    return grabcut_refine(image, logits, point_coords, point_labels, box)


def answer_masks(logits: np.ndarray, threshold: float, refine: str | None = None, image: ImageLike | None = None,
                 point_coords=None, point_labels=None, box=None, predictor=None) -> np.ndarray:
    """Masks (C, H, W) from full-size logits (C, H, W) of one prompt: thresholded, or each
    refined by `refine` with the image, the prompts and (for the zoom methods) the predictor;
    several candidates each stay themselves (`keep="same"`)."""
    if refine is None:
        return logits > threshold
    keep = "best" if len(logits) == 1 else "same"
    return np.stack([refine_mask(refine, image, lg, point_coords, point_labels, box, predictor, keep) for lg in logits])
