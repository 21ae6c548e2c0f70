"""`segment_anything.utils.onnx.SamOnnxModel`: the prompt encoder and mask decoder as one module
with the inputs and outputs of Meta's ONNX export, for scripts that export with it."""

from __future__ import annotations

from ...export.graphs import DecoderGraph
from .amg import calculate_stability_score


class SamOnnxModel(DecoderGraph):
    """`SamOnnxModel(model, return_single_mask, use_stability_score=False,
    return_extra_metrics=False)`: forward(image_embeddings, point_coords, point_labels,
    mask_input, has_mask_input, orig_im_size) -> (masks, scores, low_res_masks), or with
    `return_extra_metrics` (masks, scores, stability_scores, areas, low_res_masks)."""

    def __init__(self, model, return_single_mask: bool, use_stability_score: bool = False,
                 return_extra_metrics: bool = False) -> None:
        super().__init__(model, return_single_mask=False)
        self.model = model
        self.single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        self.return_extra_metrics = return_extra_metrics
        self.stability_score_offset = 1.0

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        low_res, scores = self.answer(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
        threshold = self.model.mask_threshold
        if self.use_stability_score:
            scores = calculate_stability_score(low_res, threshold, self.stability_score_offset)
        if self.single_mask:
            low_res, scores = self.select_single_mask(low_res, scores, point_coords.shape[1])
        masks = self.to_full_size(low_res, orig_im_size)
        if self.return_extra_metrics:
            stability = calculate_stability_score(masks, threshold, self.stability_score_offset)
            areas = (masks > threshold).sum(-1).sum(-1)
            return masks, scores, stability, areas, low_res
        return masks, scores, low_res


__all__ = ["SamOnnxModel"]
