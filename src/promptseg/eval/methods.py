"""Methods the protocols score: a SAM model through the Predictor, and classical baselines."""

from __future__ import annotations

import cv2
import numpy as np

from ..refine import answer_masks, grabcut_refine
from .protocols import Method


class SamMethod(Method):
    """A SAM model: multimask output for the first click (top score kept, all three for the
    oracle), then one mask per answer with the previous low-res logits as mask input. With
    `refine` (one of promptseg.refine.REFINERS), each answer kept is refined with the image and
    its prompts; the oracle then scores the refined top answer only."""

    def __init__(self, predictor, name: str = "promptseg", mask_input: bool = True, refine: str | None = None,
                 embedded_by: SamMethod | None = None) -> None:
        self.predictor = predictor
        self.name = name
        self.mask_input = mask_input
        self.refine = refine
        self.embedded_by = embedded_by  # a method on the same predictor that embeds each image first
        self.image = None
        self._logits = None

    def set_image(self, image: np.ndarray) -> None:
        if self.embedded_by is None or self.embedded_by.image is not image:
            self.predictor.set_image(image)
        self.image = image
        self._logits = None

    def clicks(self, points, labels):
        first = len(points) == 1
        logits, scores, low_res = self.predictor.predict(
            point_coords=points,
            point_labels=labels,
            mask_input=None if first or not self.mask_input else self._logits,
            multimask_output=first,
            return_logits=True,
        )
        k = int(np.argmax(scores))
        self._logits = low_res[k : k + 1]
        if self.refine is not None:  # only the answer kept is refined
            logits = logits[k : k + 1]
        masks = answer_masks(logits, self.predictor.mask_threshold, self.refine, self.image, points, labels,
                             predictor=self.predictor)
        mask = masks[0] if self.refine is not None else masks[k]
        return mask, list(masks) if first else []

    def box(self, box):
        logits, _, _ = self.predictor.predict(box=box, multimask_output=False, return_logits=True)
        return answer_masks(logits, self.predictor.mask_threshold, self.refine, self.image, box=box,
                            predictor=self.predictor)[0]


class GrabCutMethod(Method):
    """OpenCV GrabCut initialised from the box (5 iterations), with OpenCV's RNG seeded before
    each call (its colour models start from k-means) so that a run can be repeated."""

    name = "grabcut"
    supports_clicks = False

    def __init__(self, iterations: int = 5) -> None:
        self.iterations = iterations

    def set_image(self, image: np.ndarray) -> None:
        self.bgr = np.ascontiguousarray(image[..., ::-1])

    def box(self, box):
        h, w = self.bgr.shape[:2]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(w - 1, x1), min(h - 1, y1)
        rect = (x0, y0, max(1, x1 - x0 + 1), max(1, y1 - y0 + 1))
        mask = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(self.bgr, mask, rect, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error:  # degenerate box (e.g. the whole image): fall back to the box itself
            out = np.zeros((h, w), bool)
            out[y0 : y1 + 1, x0 : x1 + 1] = True
            return out
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


class RandomWalkerMethod(Method):
    """scikit-image's random walker seeded by the clicks (disks of radius 5 px at full size),
    with the image border as background seeds while there is no background click. Runs on
    the image scaled to `max_side` pixels (the solver's cost grows with the pixel count) and
    scales the answer back up."""

    name = "random_walker"
    supports_box = False

    def __init__(self, max_side: int = 240, beta: float = 130.0, radius: int = 5) -> None:
        self.max_side = max_side
        self.beta = beta
        self.radius = radius

    def set_image(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self.size = (h, w)
        self.scale = min(1.0, self.max_side / max(h, w))
        small = cv2.resize(image, (max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                           interpolation=cv2.INTER_AREA)
        self.small = small.astype(np.float32) / 255.0

    def clicks(self, points, labels):
        from skimage.segmentation import random_walker

        sh, sw = self.small.shape[:2]
        seeds = np.zeros((sh, sw), np.int32)
        if not (labels == 0).any():
            seeds[0, :] = seeds[-1, :] = seeds[:, 0] = seeds[:, -1] = 2
        r = max(1, round(self.radius * self.scale))
        for (x, y), lab in zip(points, labels):
            cx = min(sw - 1, int(x * self.scale))
            cy = min(sh - 1, int(y * self.scale))
            cv2.circle(seeds, (cx, cy), r, 1 if lab == 1 else 2, -1)
        prob = random_walker(self.small, seeds, beta=self.beta, mode="cg_j", channel_axis=-1,
                             return_full_prob=True, tol=1e-3)[0]
        prob = cv2.resize(prob.astype(np.float32), (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        mask = prob > 0.5
        return mask, [mask]


class GrabCutClicksMethod(Method):
    """GrabCut seeded by the clicks alone: the refinement's GrabCut (`grabcut_refine`, same
    settings) with no model answer, to tell what the model adds to `--refine grabcut`. Every
    pixel starts as a probable-background guess (none fixed) except each foreground click's
    disk, the whole image is the search region, and each click's disk is fixed to its label."""

    name = "grabcut_clicks"
    supports_box = False

    def set_image(self, image: np.ndarray) -> None:
        self.image = image

    def clicks(self, points, labels):
        h, w = self.image.shape[:2]
        guess = np.full((h, w), -1.0, np.float32)  # no model: a probable-background guess everywhere
        for (x, y), lab in zip(points, labels):
            if lab == 1:
                cv2.circle(guess, (int(x), int(y)), 5, 1.0, -1)
        whole = np.array([0, 0, w - 1, h - 1], np.float32)
        mask = grabcut_refine(self.image, guess, points, labels, whole)
        return mask, [mask]
