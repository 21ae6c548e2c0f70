"""`sam2.automatic_mask_generator`: Meta's `SAM2AutomaticMaskGenerator` names, defaults and
signature over promptseg's generator."""

from __future__ import annotations

from ..everything import MaskGenerator
from ..predict.contract import is_predictor
from .sam2_image_predictor import SAM2ImagePredictor


class SAM2AutomaticMaskGenerator(MaskGenerator):
    """Every object in an image as masks, with SAM 2's defaults (IoU filter 0.8, `use_m2m` and
    `multimask_output` options). `model` is a SAM 2 model (or any promptseg predictor); as Meta's,
    its predictor fills holes and removes specks up to `min_mask_region_area` low-res pixels."""

    def __init__(self, model, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids=None, min_mask_region_area: int = 0,
                 output_mode: str = "binary_mask", use_m2m: bool = False, multimask_output: bool = True,
                 **kwargs) -> None:
        if not is_predictor(model):
            model = SAM2ImagePredictor(model, max_hole_area=min_mask_region_area, max_sprinkle_area=min_mask_region_area)
        super().__init__(
            model, points_per_side=points_per_side, points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh, crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor, point_grids=point_grids,
            min_mask_region_area=min_mask_region_area, output_mode=output_mode, mask_threshold=mask_threshold,
            use_m2m=use_m2m, multimask_output=multimask_output,
        )

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs) -> SAM2AutomaticMaskGenerator:
        """The generator of a Hugging Face id, with weights from promptseg's cache."""
        from .build_sam import build_sam2_hf

        return cls(build_sam2_hf(model_id), **kwargs)
