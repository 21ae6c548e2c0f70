"""The embedded image, one type for every backend (no torch here: the ONNX Runtime path uses it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..prompts import check_flag


@dataclass
class ImageState:
    """An embedded image: what prompts are answered on.

    `features` is the encoder's output (1, C, h, w), a torch tensor or a numpy array according to
    the backend; `original_size` is the (H, W) of the image as given, `input_size` the (h, w) it
    was resized to before padding. A predictor that averages with the mirror image keeps the
    mirror image's state in `mirror`. SAM 2's models also read `high_res`, the encoder's 4x and
    8x levels (1, C/8, 4h, 4w) and (1, C/4, 2h, 2w); HQ-SAM's, `(hq_features,)` (1, C/8, 4h, 4w).
    The two last fields are the torch backend's
    prompt-independent decoder work, made on first use and kept with the image."""

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    mirror: ImageState | None = None
    high_res: Any = None
    image_pe: Any = None
    decoder_prepared: Any = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the embedding(s) (the mirror image's counted too)."""
        own = int(self.features.nbytes) + sum(int(f.nbytes) for f in self.high_res or ())
        return own + (self.mirror.nbytes if self.mirror is not None else 0)


def check_hq_token_only(flag, hq: bool) -> bool:
    """`hq_token_only` checked: a bool, and True only for an HQ-SAM model."""
    check_flag(flag, "hq_token_only")
    if flag and not hq:
        raise ValueError("hq_token_only applies to HQ-SAM models (vit_b_hq, vit_l_hq, vit_h_hq, vit_tiny_hq); "
                         "this model has no HQ token")
    return bool(flag)


def as_float_array(a) -> np.ndarray:
    """A torch tensor (any device) or an array as a float32 numpy array (torch not imported)."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


class EmbeddedImage:
    """Mixin for predictors: `self._state` is the current `ImageState` or None, behind the
    accessors SAM's predictor users reach for; and `predict`, SAM's call, made of the
    backend's `predict_low_res` and `postprocess`."""

    _state: ImageState | None = None
    _how_to_set = "call set_image(image) first"
    low_res_limit: float | None = None  # `predict` returns low-res logits clamped to +-this (SAM 2: 32)
    square_input: bool = False  # the image is stretched to the model's square input (SAM 2), not padded
    hq: bool = False  # HQ-SAM: one mask per prompt; `hq_token_only` applies

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    @property
    def features(self):
        return self.image_state.features

    @property
    def original_size(self) -> tuple[int, int]:
        return self.image_state.original_size

    @property
    def input_size(self) -> tuple[int, int]:
        return self.image_state.input_size

    @property
    def image_state(self) -> ImageState:
        """The embedded image prompts are answered on; a server holding many embedded images
        swaps them in and out here instead of embedding again. Raises ValueError when none is set."""
        if self._state is None:
            raise ValueError(f"no image is set; {self._how_to_set}")
        return self._state

    @image_state.setter
    def image_state(self, state: ImageState | None) -> None:
        self._state = state

    def get_image_embedding(self):
        return self.features

    def reset_image(self) -> None:
        self._state = None

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts given in the original image's pixel frame.

        point_coords (N, 2) as (x, y) with point_labels (N,) 1 foreground / 0 background;
        box (4,) as x0, y0, x1, y1; mask_input (1, h, w) low-res logits of an earlier call.
        Returns masks (C, H, W) bool (logits with return_logits), scores (C,), and low-res
        logits (C, h, w); C is 3 with multimask_output, else 1. HQ-SAM answers one mask: the SAM
        mask (the single-mask output, or the best of the three with multimask_output) plus the HQ
        token's, or with `hq_token_only` the HQ token's alone.

        Batched: point_coords (B, N, 2) with labels (B, N) (-1 pads shorter point sets), boxes
        (B, 4), mask_input (B, 1, h, w); every output then gains a leading B axis.
        """
        check_flag(return_logits, "return_logits")
        low_res, iou, state, batched = self.predict_low_res(point_coords, point_labels, box, mask_input,
                                                            multimask_output, hq_token_only)[:4]
        low = as_float_array(low_res)
        if self.low_res_limit is not None:
            low = np.clip(low, -self.low_res_limit, self.low_res_limit)
        out = (self.postprocess(low_res, state, return_logits), as_float_array(iou), low)
        return out if batched else tuple(a[0] for a in out)
