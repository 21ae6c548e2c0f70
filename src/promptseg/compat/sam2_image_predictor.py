"""`sam2.sam2_image_predictor`: Meta's `SAM2ImagePredictor` names and signatures over promptseg's
torch predictor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..predict import Predictor


class SAM2ImagePredictor(Predictor):
    """Embed an image once with a SAM 2 model, then answer clicks, boxes and masks.

    As Meta's: `set_image`, `set_image_batch`, `predict(..., normalize_coords=True)`,
    `predict_batch` over lists of per-image prompts, `get_image_embedding`, `reset_predictor`;
    `mask_threshold`, `max_hole_area` and `max_sprinkle_area` as its options."""

    def __init__(self, sam_model, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0, **kwargs) -> None:
        super().__init__(sam_model, mask_threshold=mask_threshold, max_hole_area=max_hole_area,
                         max_sprinkle_area=max_sprinkle_area)

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs) -> SAM2ImagePredictor:
        """The predictor of a Hugging Face id, with weights from promptseg's cache
        (`promptseg.compat.build_sam.build_sam2_hf`)."""
        from .build_sam import build_sam2_hf

        options = {k: kwargs.pop(k) for k in ("mask_threshold", "max_hole_area", "max_sprinkle_area") if k in kwargs}
        return cls(build_sam2_hf(model_id, **kwargs), **options)

    def set_image_batch(self, image_list: Sequence, image_format: str = "RGB", batch_size: int = 4) -> None:
        super().set_image_batch(list(image_list), image_format, batch_size)

    def _original_frame(self, coords, original_size, normalize_coords: bool):
        """Prompt coordinates in the original frame (`normalize_coords` False: they were given in
        the model's input square, as Meta's predictor then takes them)."""
        if coords is None or normalize_coords:
            return coords
        h, w = original_size
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0::2] *= w / self.img_size
        out[..., 1::2] *= h / self.img_size
        return out

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output: bool = True,
                return_logits: bool = False, normalize_coords: bool = True):
        """Masks (C, H, W), scores (C,) and low-res logits (C, 256, 256); batched prompts (several
        boxes, or (B, N, 2) points) add a leading axis, as Meta's predictor returns them."""
        size = self.image_state.original_size
        point_coords = self._original_frame(point_coords, size, normalize_coords)
        box = self._original_frame(box, size, normalize_coords)
        return super().predict(point_coords, point_labels, box, mask_input, multimask_output, return_logits)

    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None, mask_input_batch=None,
                      multimask_output: bool = True, return_logits: bool = False, normalize_coords: bool = True):
        """One `predict` per image of `set_image_batch`; returns lists of masks, scores and low-res
        logits."""
        n = len(self.image_batch)
        def pick(values, i):
            return None if values is None else values[i]

        prompts = [
            dict(point_coords=pick(point_coords_batch, i), point_labels=pick(point_labels_batch, i),
                 box=pick(box_batch, i), mask_input=pick(mask_input_batch, i), multimask_output=multimask_output,
                 return_logits=return_logits, normalize_coords=normalize_coords)
            for i in range(n)
        ]
        results = super().predict_batch(prompts)
        return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]

    def reset_predictor(self) -> None:
        """Forget the embedded image(s)."""
        self.reset_image()
        self.clear_image_batch()
