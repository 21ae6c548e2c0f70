"""Test-time augmentation: every prompt is asked twice, on the image and on its mirror image
(left and right swapped), and the two answers are averaged (logits, scores and low-res logits,
candidate by candidate).

`FlipPredictor` wraps a predictor (torch or ONNX Runtime) and keeps the predictor contract, so
everything mode, evaluation, the zoom refinement, the CLI and the server take it as any other.
It costs a second image embedding per image and a second decoder pass per prompt. The model
card has the measured gain.
"""

from __future__ import annotations

import numpy as np

from ..io import ImageLike, read_image
from ..transforms import input_frame_logits, original_frame_logits
from .contract import LowResAnswer, PromptPredictor
from .state import ImageState, as_float_array


def mirror_low_res(low_res: np.ndarray, input_size: tuple[int, int], img_size: int) -> np.ndarray:
    """Low-res logits (..., h, w) of an image resized to `input_size` (ih, iw) in the model's
    input square, moved to the low-res frame of the mirror image. The image fills the left
    `iw / img_size` of the square (all of it for SAM 2, which resizes to the square), so the
    columns it covers are mirrored about its own middle (exactly when it covers whole columns,
    else by linear interpolation between the two nearest) and the padding's columns are left as
    they were."""
    low = np.asarray(low_res, dtype=np.float32)
    w = low.shape[-1]
    iw = int(input_size[1])
    covered = iw * w / img_size  # the image's width in low-res columns
    n = min(w, int(np.ceil(covered - 1e-6)))
    src = np.clip(covered - 1 - np.arange(n), 0, w - 1)  # where column c's mirror centre falls
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, w - 1)
    t = (src - i0).astype(np.float32)
    out = low.copy()
    out[..., :n] = low[..., i0] * (1 - t) + low[..., i1] * t
    return out


def _mirror_x(values: np.ndarray, width: int) -> np.ndarray:
    """x of pixel `x` in the mirror image: width - 1 - x (pixel centres swap), kept in [0, width]."""
    return np.clip(width - 1 - values, 0, width)


class FlipPredictor:
    """A predictor that asks each prompt on the image and on its mirror image and averages the
    answers. `predictor` is any predictor of the contract (`PromptPredictor`: torch or ONNX
    Runtime); it embeds both images, and the image's `ImageState` carries the mirror image's in
    `mirror`, so the pair is swapped in and out as one state."""

    def __init__(self, predictor: PromptPredictor) -> None:
        if isinstance(predictor, FlipPredictor):
            raise ValueError("this predictor already averages with the mirror image")
        self.predictor = predictor

    # --- embedding ------------------------------------------------------------------
    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Embed the image and its mirror image (two encoder passes)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arr = read_image(image)
        self.predictor.set_image(np.ascontiguousarray(arr[:, ::-1]), image_format)
        mirror = self.predictor.image_state
        self.predictor.set_image(arr, image_format)
        self.predictor.image_state.mirror = mirror

    @property
    def image_state(self) -> ImageState:
        """The embedded image, with its mirror image's state in `mirror`."""
        if not self.is_image_set:
            raise ValueError("no image is set; call set_image(image) first")
        return self.predictor.image_state

    @image_state.setter
    def image_state(self, state: ImageState | None) -> None:
        if state is not None and state.mirror is None:
            raise ValueError("this image state has no mirror image; embed the image with FlipPredictor.set_image")
        self.predictor.image_state = state

    @property
    def is_image_set(self) -> bool:
        return self.predictor.is_image_set and self.predictor.image_state.mirror is not None

    def reset_image(self) -> None:
        self.predictor.reset_image()

    # --- prompts ---------------------------------------------------------------------
    def _both_views(self, point_coords, point_labels, box, mask_input, multimask_output, hq_token_only=False):
        """The wrapped predictor's low-res answers on the image and on the mirror image (the
        latter in the mirror image's frame), as float32 arrays, with the image's state."""
        state = self.image_state
        # the wrapped predictor checks the prompts and says what is wrong with them
        low, iou, plain, batched = self.predictor.predict_low_res(point_coords, point_labels, box, mask_input,
                                                                  multimask_output, hq_token_only)[:4]
        height, width = plain.original_size
        m_coords = m_box = m_mask = None
        if point_coords is not None:
            m_coords = np.array(point_coords, dtype=np.float32)
            m_coords[..., 0] = _mirror_x(m_coords[..., 0], width)
        if box is not None:
            b = np.array(box, dtype=np.float32)
            m_box = b.copy()
            m_box[..., 0], m_box[..., 2] = _mirror_x(b[..., 2], width), _mirror_x(b[..., 0], width)
        if mask_input is not None:
            m_mask = mirror_low_res(mask_input, plain.input_size, self.img_size)
        self.predictor.image_state = state.mirror
        try:
            m_low, m_iou = self.predictor.predict_low_res(m_coords, point_labels, m_box, m_mask, multimask_output,
                                                          hq_token_only)[:2]
        finally:
            self.predictor.image_state = state
        return as_float_array(low), as_float_array(m_low), (as_float_array(iou) + as_float_array(m_iou)) / 2, plain, batched

    def predict_low_res(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                        multimask_output: bool = True, hq_token_only: bool = False) -> LowResAnswer:
        """The mean of the two views' low-res logits (the mirror view's moved to the image's
        low-res frame) and predicted IoUs."""
        low, m_low, iou, plain, batched = self._both_views(point_coords, point_labels, box, mask_input,
                                                           multimask_output, hq_token_only)
        return LowResAnswer((low + mirror_low_res(m_low, plain.input_size, self.img_size)) / 2, iou, plain, batched)

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
        """As `Predictor.predict` (single or batched prompts, original pixel frame); each output
        is the mean of the answers on the image and on its mirror image."""
        low, m_low, iou, plain, batched = self._both_views(point_coords, point_labels, box, mask_input,
                                                           multimask_output, hq_token_only)
        mirrored = (low + mirror_low_res(m_low, plain.input_size, self.img_size)) / 2
        if tuple(plain.input_size) == (self.img_size, self.img_size):
            # the image fills the square (SAM 2, or a square image): the low-res mirror is exact,
            # and the mean is brought to full size as the wrapped predictor brings any answer
            full = self.predictor.postprocess(mirrored, plain, return_logits)
            return (full, iou, mirrored) if batched else (full[0], iou[0], mirrored[0])
        # Averaged in the model's input frame and brought to full size once: the second bilinear
        # step commutes with the mirror and with the mean, so this is the mean of the two
        # full-size answers at half the cost.
        mean = input_frame_logits(low, plain.input_size, self.img_size)
        mean += input_frame_logits(m_low, plain.input_size, self.img_size)[..., ::-1]
        mean *= 0.5
        out = (
            original_frame_logits(mean, plain.original_size, self.mask_threshold, return_logits),
            iou,
            mirrored,
        )
        return out if batched else tuple(a[0] for a in out)

    # --- everything mode: MaskGenerator asks many single clicks of the embedded pair ------
    def decode_points(self, state: ImageState, points: np.ndarray, min_iou: float | None = None,
                      hq_token_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One foreground click per prompt on `state` and its mirror image, points (n, 2) in the
        original frame -> the three candidates' low-res logits (n, 3, h, w) and IoU predictions
        (n, 3), each the mean of the two views' (in the image's low-res frame). Every logit is
        computed, whatever `min_iou`: the filter reads the mean of both views' IoU."""
        if state.mirror is None:
            raise ValueError("this image state has no mirror image; embed the image with FlipPredictor.set_image")
        low, iou = self.predictor.decode_points(state, points, hq_token_only=hq_token_only)
        mirrored = np.array(points, dtype=np.float32)
        mirrored[:, 0] = _mirror_x(mirrored[:, 0], state.original_size[1])
        m_low, m_iou = self.predictor.decode_points(state.mirror, mirrored, hq_token_only=hq_token_only)
        m_low = mirror_low_res(as_float_array(m_low), state.input_size, self.img_size)
        return (as_float_array(low) + m_low) / 2, (as_float_array(iou) + as_float_array(m_iou)) / 2

    def postprocess(self, low_res, state: ImageState, return_logits: bool = False) -> np.ndarray:
        """Low-res logits in the image's frame -> full size, as the wrapped predictor does."""
        return self.predictor.postprocess(low_res, state, return_logits)


def _passed_on(name: str) -> property:
    return property(lambda self: getattr(self.predictor, name), doc=f"The wrapped predictor's `{name}`.")


# the embedded image's and the model's sizes, threshold and settings are the wrapped predictor's
for _name in ("original_size", "input_size", "mask_threshold", "img_size", "mask_input_size", "model_type", "settings",
              "low_res_limit", "square_input", "hq"):
    setattr(FlipPredictor, _name, _passed_on(_name))
