"""Automatic mask generation ("segment everything"): a grid of single-point prompts over the
image (and optionally over overlapping crops), filtered by predicted IoU and stability,
de-duplicated by box NMS, optionally cleaned of small holes and islands.

Drop-in for SAM's `SamAutomaticMaskGenerator`: the same options and record fields. The work
after each image embedding is arranged to avoid waste: prompts share the image-side decoder
work, and only masks that pass the IoU filter are brought to full size, one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import masks as M
from .io import ImageLike, read_image
from .predict.contract import PromptPredictor
from .predict.loader import as_predictor
from .predict.state import ImageState, check_hq_token_only

if TYPE_CHECKING:
    from .model import Sam

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
MAX_POINTS_PER_SIDE = 256  # 65,536 clicks per crop
MAX_POINTS_PER_BATCH = 1024  # a batch's low-res logits: about 0.8 MB per click
MAX_CROP_LAYERS = 4  # 341 crops


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be a whole number {span}, got {value!r}")


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def _check_fraction(name: str, value, high_open: bool = False) -> None:
    ok = _is_finite_number(value) and 0.0 <= value and (value < 1.0 if high_open else value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1{')' if high_open else ']'}, got {value!r}")


def _check_options(o: dict) -> None:
    """ValueError naming the first option of `MaskGenerator` that is out of range or would
    leave a crop layer without clicks."""
    if (o["points_per_side"] is None) == (o["point_grids"] is None):
        raise ValueError("give exactly one of points_per_side and point_grids")
    if o["output_mode"] not in OUTPUT_MODES:
        raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {o['output_mode']!r}")
    _check_int("points_per_batch", o["points_per_batch"], 1, MAX_POINTS_PER_BATCH)
    _check_int("crop_n_layers", o["crop_n_layers"], 0, MAX_CROP_LAYERS)
    _check_int("crop_n_points_downscale_factor", o["crop_n_points_downscale_factor"], 1)
    _check_int("min_mask_region_area", o["min_mask_region_area"], 0)
    for name in ("pred_iou_thresh", "stability_score_thresh"):  # any finite number, as SAM's generator takes
        value = o[name]
        if value is not None and not _is_finite_number(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    for name in ("box_nms_thresh", "crop_nms_thresh"):
        _check_fraction(name, o[name])
    _check_fraction("crop_overlap_ratio", o["crop_overlap_ratio"], high_open=True)
    for name in ("use_m2m", "multimask_output", "hq_token_only"):
        if not isinstance(o[name], (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {o[name]!r}")
    if o["mask_threshold"] is not None and not _is_finite_number(o["mask_threshold"]):
        raise ValueError(f"mask_threshold must be a finite number, got {o['mask_threshold']!r}")
    offset = o["stability_score_offset"]
    if not (_is_finite_number(offset) and offset >= 0):
        raise ValueError(f"stability_score_offset must be a finite number >= 0, got {offset!r}")
    if o["points_per_side"] is not None:
        pps, factor, layers = o["points_per_side"], o["crop_n_points_downscale_factor"], o["crop_n_layers"]
        _check_int("points_per_side", pps, 1, MAX_POINTS_PER_SIDE)
        if int(pps / factor**layers) < 1:
            raise ValueError(
                f"points_per_side {pps} with crop_n_points_downscale_factor {factor} leaves no clicks in crop "
                f"layer {layers}; use more points per side, a smaller factor or fewer crop layers"
            )
        return
    grids = o["point_grids"]
    if len(grids) != o["crop_n_layers"] + 1:
        raise ValueError(f"point_grids needs one grid per crop layer ({o['crop_n_layers'] + 1}), got {len(grids)}")
    for i, grid in enumerate(grids):
        g = np.asarray(grid, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0 or not np.isfinite(g).all() or g.min() < 0 or g.max() > 1:
            raise ValueError(f"point_grids[{i}] must be an Nx2 array (N >= 1) of (x, y) in [0, 1], got shape {g.shape}")


@dataclass
class _Found:
    """Candidate masks as columns: RLEs in the full image frame plus per-mask tensors."""

    rles: list[dict] = field(default_factory=list)
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.int64))  # XYXY
    iou: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    stability: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 2), dtype=torch.float64))
    crops: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.int64))  # XYXY

    @staticmethod
    def concat(parts: list[_Found]) -> _Found:
        parts = [p for p in parts if len(p)]
        if not parts:
            return _Found()
        return _Found(
            [r for p in parts for r in p.rles],
            *(
                torch.cat([getattr(p, name) for p in parts])
                for name in ("boxes", "iou", "stability", "points", "crops")
            ),
        )

    def take(self, idx: torch.Tensor) -> _Found:
        idx = idx.long()
        return _Found(
            [self.rles[i] for i in idx.tolist()],
            self.boxes[idx],
            self.iou[idx],
            self.stability[idx],
            self.points[idx],
            self.crops[idx],
        )

    def __len__(self) -> int:
        return len(self.rles)


def _nothing() -> None:
    pass


def generator_defaults(model: Sam | PromptPredictor) -> dict[str, float]:
    """Everything-mode thresholds chosen for a model's weights (SAM's 0.88 / 0.95 when its
    weights carry none)."""
    return as_predictor(model).settings.generator_defaults


class MaskGenerator:
    """Every object and part in an image as masks with quality scores.

    Options have the meaning of SAM's automatic generator: a `points_per_side`^2 grid of
    clicks (or explicit normalised `point_grids`, one per crop layer), processed
    `points_per_batch` at a time; masks kept when their predicted IoU exceeds
    `pred_iou_thresh` and their stability score (IoU of the mask thresholded at +/-
    `stability_score_offset`) reaches `stability_score_thresh`; duplicates removed by box NMS
    at `box_nms_thresh` within a crop and `crop_nms_thresh` across crops; `crop_n_layers`
    extra layers of overlapping crops; holes and islands under `min_mask_region_area` pixels
    removed; records in `output_mode` binary_mask, uncompressed_rle or coco_rle.

    SAM 2's generator adds: `mask_threshold` (None: the predictor's) for stability and masks;
    `multimask_output` False asks each click for one mask (SAM 2's models: the single-mask
    token, or its best candidate where that is unstable); `use_m2m` refines each candidate once
    with its click and its own low-res logits as the mask input before the filters.

    HQ-SAM's models answer each click with one mask (SAM's best candidate plus the HQ token's);
    `hq_token_only` keeps the HQ token's mask alone (an error for other models).
    """

    def __init__(
        self,
        model: Sam | PromptPredictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        mask_threshold: float | None = None,
        use_m2m: bool = False,
        multimask_output: bool = True,
        hq_token_only: bool = False,
    ) -> None:
        _check_options(locals())
        if points_per_side is not None:
            self.point_grids = M.layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        # a Sam model runs through the torch predictor; any predictor serves as it is
        self.predictor = as_predictor(model)
        check_hq_token_only(hq_token_only, getattr(self.predictor, "hq", False))
        # None: the defaults chosen for the model's weights (SAM's 0.88 / 0.95 for Meta's; the
        # bundled model's IoU head is calibrated on its weaker masks, see promptseg.weights)
        defaults = self.predictor.settings.generator_defaults
        pred_iou_thresh = defaults["pred_iou_thresh"] if pred_iou_thresh is None else pred_iou_thresh
        if stability_score_thresh is None:
            stability_score_thresh = defaults["stability_score_thresh"]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.mask_threshold = self.predictor.mask_threshold if mask_threshold is None else float(mask_threshold)
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output
        self.hq_token_only = hq_token_only

    @property
    def _hq(self) -> dict[str, bool]:
        """The predictor's `hq_token_only` keyword, passed on only when set: a predictor written
        before HQ-SAM need not take it."""
        return {"hq_token_only": True} if self.hq_token_only else {}

    @classmethod
    def check_options(cls, **options) -> None:
        """ValueError naming a bad option, as the constructor checks them, without a model (a
        job checks its options on the driver before its workers build generators)."""
        import inspect

        params = inspect.signature(cls.__init__).parameters
        unknown = set(options) - set(params) - {"self", "model"}
        if unknown:
            raise ValueError(f"unknown MaskGenerator options: {', '.join(sorted(unknown))}")
        _check_options({**{k: p.default for k, p in params.items() if p.default is not p.empty}, **options})

    @property
    def prompt_count(self) -> int:
        """Clicks these options ask of the decoder per image, over every crop (crop layer i has
        4^i crops), whatever the image's size: the measure of a request's work."""
        return sum(4**layer * len(grid) for layer, grid in enumerate(self.point_grids))

    @torch.inference_mode()
    def generate(self, image: ImageLike, image_state: ImageState | None = None,
                 on_step: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Records with `segmentation`, `area`, `bbox` (XYWH), `predicted_iou`, `point_coords`,
        `stability_score` and `crop_box` (XYWH), one per mask found.

        `image_state`: this image already embedded by this model (a predictor's `image_state`
        after `set_image(image)`); the whole-image layer then uses it instead of embedding again.
        `on_step`: called before each crop's embedding, each batch of clicks, and each mask
        brought to full size or cleaned of small regions (each step a fraction of a second on a
        CPU, but for a large model's crop embedding); it may run
        other work meanwhile, or raise to stop this image (the exception propagates)."""
        image = read_image(image)
        if image_state is not None and tuple(image_state.original_size) != tuple(image.shape[:2]):
            raise ValueError(
                f"image_state was embedded from a {tuple(image_state.original_size)} image, but this image is "
                f"{tuple(image.shape[:2])}; pass the state of this image or none"
            )
        on_step = on_step or _nothing
        found = self._generate(image, image_state, on_step)
        if self.min_mask_region_area > 0 and len(found):
            found = self._remove_small_regions(found, self.min_mask_region_area, self.box_nms_thresh, on_step)
        records = []
        for i, rle in enumerate(found.rles):
            if self.output_mode == "binary_mask":
                segmentation = M.rle_to_mask(rle)
            elif self.output_mode == "coco_rle":
                segmentation = M.coco_rle(rle)
            else:
                segmentation = rle
            records.append(
                {
                    "segmentation": segmentation,
                    "area": M.rle_area(rle),
                    "bbox": M.box_xyxy_to_xywh(found.boxes[i].tolist()),
                    "predicted_iou": found.iou[i].item(),
                    "point_coords": [found.points[i].tolist()],
                    "stability_score": found.stability[i].item(),
                    "crop_box": M.box_xyxy_to_xywh(found.crops[i].tolist()),
                }
            )
        return records

    def _generate(self, image: np.ndarray, image_state, on_step: Callable[[], None]) -> _Found:
        size = image.shape[:2]
        boxes, layers = M.crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        found = _Found.concat([self._process_crop(image, box, layer, size, image_state, on_step)
                               for box, layer in zip(boxes, layers)])
        if len(boxes) > 1 and len(found):
            scores = 1.0 / M.box_area(found.crops).float()  # prefer masks from smaller crops
            found = found.take(M.batched_nms(found.boxes, scores, self.crop_nms_thresh))
        return found

    def _process_crop(self, image: np.ndarray, crop: list[int], layer: int, size: tuple[int, int],
                      image_state, on_step: Callable[[], None]) -> _Found:
        on_step()
        x0, y0, x1, y1 = crop
        crop_image = image[y0:y1, x0:x1, :]
        crop_size = crop_image.shape[:2]
        if layer == 0 and image_state is not None:  # the whole image, already embedded
            self.predictor.image_state = image_state
        else:
            self.predictor.set_image(crop_image)
        state = self.predictor.image_state
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            on_step()
            parts.append(self._process_batch(state, points[start : start + self.points_per_batch], crop, size, on_step))
        found = _Found.concat(parts)
        self.predictor.reset_image()
        if not len(found):
            return found
        found = found.take(M.batched_nms(found.boxes, found.iou, self.box_nms_thresh))
        found.boxes = M.uncrop_boxes(found.boxes, crop)
        found.points = M.uncrop_points(found.points, crop)
        return found

    def _process_batch(self, state, points: np.ndarray, crop: list[int], size: tuple[int, int],
                       on_step: Callable[[], None]) -> _Found:
        pred = self.predictor
        if self.multimask_output and not self.use_m2m:
            # prompts whose candidates all fail the IoU filter need not be brought to mask size
            min_iou = self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else None
            low_res, iou = (torch.as_tensor(a) for a in pred.decode_points(state, points, min_iou, **self._hq))
        else:
            answer = pred.predict_low_res(points[:, None, :], np.ones((len(points), 1), dtype=np.int64),
                                          multimask_output=self.multimask_output, **self._hq)
            low_res, iou = torch.as_tensor(answer.low_res), torch.as_tensor(answer.iou)
        per_point = low_res.shape[1]
        low_res = low_res.flatten(0, 1)
        iou = iou.flatten(0, 1)
        pts_np = np.repeat(points, per_point, axis=0)
        pts = torch.as_tensor(pts_np)
        if self.use_m2m:
            low_res, iou = self._refine_with_own_masks(pts_np, low_res)
        keep = torch.arange(len(iou))
        if self.pred_iou_thresh > 0.0:
            keep = keep[iou[keep] > self.pred_iou_thresh]
        if len(keep) == 0:
            return _Found()
        threshold = self.mask_threshold
        offset = self.stability_score_offset
        image_box = [0, 0, size[1], size[0]]
        # Bring survivors to full size one at a time: memory stays at one mask, whatever the image.
        kept, boxes, stabilities, rles = [], [], [], []
        for i in keep.tolist():
            on_step()
            logits = pred.postprocess(low_res[i : i + 1, None], state, True)[0, 0]
            stab = M.stability_score_np(logits, threshold, offset)
            if self.stability_score_thresh > 0.0 and not stab >= self.stability_score_thresh:
                continue
            mask = logits > threshold
            box = M.mask_to_box(mask)
            if M.near_crop_edge(box, crop, image_box):
                continue
            kept.append(i)
            boxes.append(box)
            stabilities.append(float(stab))
            rles.append(M.mask_to_rle(mask, offset=(crop[0], crop[1]), size=size))
        if not kept:
            return _Found()
        idx = torch.tensor(kept)
        return _Found(
            rles,
            torch.tensor(boxes, dtype=torch.int64),
            iou[idx],
            torch.tensor(stabilities, dtype=torch.float32),
            pts[idx],
            torch.tensor([crop], dtype=torch.int64).expand(len(kept), 4),
        )

    def _refine_with_own_masks(self, points: np.ndarray, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2's mask-to-mask refinement: each candidate asked again, one mask, with its click
        and its own low-res logits (clamped as `predict` returns them) as the mask input."""
        pred = self.predictor
        limit = getattr(pred, "low_res_limit", None)
        if limit is not None:
            low_res = low_res.clamp(-limit, limit)
        lows, ious = [], []
        for start in range(0, len(points), self.points_per_batch):
            end = start + self.points_per_batch
            answer = pred.predict_low_res(points[start:end, None, :], np.ones((len(points[start:end]), 1), dtype=np.int64),
                                          mask_input=low_res[start:end, None].numpy(), multimask_output=False,
                                          **self._hq)
            lows.append(torch.as_tensor(answer.low_res)[:, 0])
            ious.append(torch.as_tensor(answer.iou)[:, 0])
        return torch.cat(lows), torch.cat(ious)

    @staticmethod
    def _remove_small_regions(found: _Found, min_area: int, nms_thresh: float,
                              on_step: Callable[[], None] = _nothing) -> _Found:
        """Fill small holes and drop small islands; masks changed by this lose to unchanged
        ones in a box NMS, and the survivors get their cleaned masks and boxes."""
        boxes = found.boxes.clone()  # an unchanged mask keeps its box
        changed: dict[int, np.ndarray] = {}  # only changed masks are held, not every full-size mask
        for i, rle in enumerate(found.rles):
            on_step()
            mask, holes_changed = M.remove_small_regions(M.rle_to_mask(rle), min_area, "holes")
            mask, islands_changed = M.remove_small_regions(mask, min_area, "islands")
            if holes_changed or islands_changed:
                changed[i] = mask
                boxes[i] = torch.tensor(M.mask_to_box(mask))
        scores = torch.tensor([0.0 if i in changed else 1.0 for i in range(len(found))])
        keep = M.batched_nms(boxes, scores, nms_thresh)
        kept = set(keep.tolist())
        rles = [M.mask_to_rle(changed[i]) if i in changed and i in kept else r for i, r in enumerate(found.rles)]
        return _Found(rles, boxes, found.iou, found.stability, found.points, found.crops).take(keep)
