"""What every predictor offers: the contract that everything mode, refinement, evaluation, the
CLI and the server rely on, whichever backend (torch, ONNX Runtime) or wrapper (mirror
averaging) answers."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..io import ImageLike
from ..weights import WeightsSettings
from .state import ImageState


class LowResAnswer(NamedTuple):
    """An answer before it is brought to full size: low-res logits (B, C, h, w) and predicted
    IoU (B, C) (torch tensors or numpy arrays), the image it was asked on, and whether the prompts
    came batched (else B is 1 and `predict` drops that axis); and, from backends that give them,
    the object-score logits (B, 1) of SAM 2's models (above 0: an object is there)."""

    low_res: Any
    iou: Any
    state: ImageState
    batched: bool
    object_scores: Any = None


@runtime_checkable
class PromptPredictor(Protocol):
    """Embed an image once, then answer prompts (clicks, a box, a low-res mask) with masks.

    Prompts and answers are in the original image's pixel frame, as SAM's predictor has them."""

    # the model's sizes and threshold
    @property
    def img_size(self) -> int: ...  # the model's square input side
    @property
    def mask_input_size(self) -> tuple[int, int]: ...  # (h, w) of low-res logits and mask inputs
    @property
    def mask_threshold(self) -> float: ...
    @property
    def model_type(self) -> str | None: ...
    @property
    def settings(self) -> WeightsSettings: ...  # chosen for the loaded weights (promptseg.weights)
    @property
    def low_res_limit(self) -> float | None: ...  # `predict` clamps returned low-res logits to +-this (SAM 2)
    @property
    def square_input(self) -> bool: ...  # the image is stretched to the square input (SAM 2), not padded
    @property
    def hq(self) -> bool: ...  # HQ-SAM: one mask per prompt, and `hq_token_only` applies

    # the embedded image
    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Embed an image (array, PIL image or path) and make it the current one."""

    @property
    def image_state(self) -> ImageState:
        """The current embedded image; settable, to swap images without embedding again."""

    @property
    def is_image_set(self) -> bool: ...

    def reset_image(self) -> None: ...

    # prompts
    def predict_low_res(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        hq_token_only: bool = False,
    ) -> LowResAnswer:
        """`predict`'s checks and decoder pass, without the full-size step."""

    def postprocess(self, low_res: Any, state: ImageState, return_logits: bool = False) -> np.ndarray:
        """Low-res logits (B, C, h, w) of `state`'s image -> full-size masks (bool) or logits."""

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
        """Masks (C, H, W), scores (C,) and low-res logits (C, h, w); batched prompts add a B axis.
        HQ-SAM answers one mask (C = 1); `hq_token_only` (HQ-SAM only) leaves out the SAM mask."""

    def decode_points(self, state: ImageState, points: np.ndarray, min_iou: float | None = None,
                      hq_token_only: bool = False) -> tuple[Any, Any]:
        """One foreground click per prompt, points (n, 2) -> the three candidates' low-res logits
        (n, 3, h, w) and predicted IoU (n, 3) (everything mode's grid; HQ-SAM: the one answer,
        (n, 1, h, w) and (n, 1)). With `min_iou`, a backend
        may leave out (as NaN) the logits of a prompt none of whose candidates predicts an IoU
        above it: the caller drops those candidates unread."""


def is_predictor(obj: Any) -> bool:
    """Whether `obj` offers every member of `PromptPredictor`, looked up without running its
    properties (`isinstance` on Python 3.11 runs them, and `image_state` raises with no image)."""
    import inspect

    members = [n for n in PromptPredictor.__dict__ if not n.startswith("_")]

    missing = object()
    return all(inspect.getattr_static(obj, n, missing) is not missing for n in members)
