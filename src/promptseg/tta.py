"""Test-time augmentation: every prompt is asked twice, on the image and on its mirror image
(left and right swapped), and the two answers are averaged (logits, scores and low-res logits,
candidate by candidate).

`FlipPredictor` wraps a predictor (torch or ONNX Runtime) and answers as it does, so the
evaluation, the zoom refinement and the CLI take either. It costs a second image embedding per
image and a second decoder pass per prompt. MODEL_CARD.md has the measured gain.
"""

from __future__ import annotations

import numpy as np

from .io import ImageLike, read_image
from .transforms import input_frame_logits, original_frame_logits, preprocess_shape


def mirror_low_res(low_res: np.ndarray, original_size: tuple[int, int], img_size: int) -> np.ndarray:
    """Low-res logits (..., h, w) of an image of `original_size` (H, W), moved to the low-res frame
    of the mirror image. The image fills the left `iw / img_size` of the model's padded square, so
    the columns it covers are mirrored about its own middle (exactly when it covers whole columns,
    else by linear interpolation between the two nearest) and the padding's columns are left as
    they were."""
    low = np.asarray(low_res, dtype=np.float32)
    w = low.shape[-1]
    _, iw = preprocess_shape(int(original_size[0]), int(original_size[1]), img_size)
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
    answers. `predictor` is a `Predictor` or an `OnnxPredictor`; it holds the image's embedding,
    this wrapper the mirror image's."""

    def __init__(self, predictor) -> None:
        if isinstance(predictor, FlipPredictor):
            raise ValueError("this predictor already averages with the mirror image")
        self.predictor = predictor
        self._mirror = None

    # --- embedding ------------------------------------------------------------------
    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Embed the image and its mirror image (two encoder passes)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arr = read_image(image)
        self.predictor.set_image(np.ascontiguousarray(arr[:, ::-1]), image_format)
        mirror = self.predictor.image_state
        self.predictor.set_image(arr, image_format)
        self._mirror = mirror

    @property
    def image_state(self):
        """Both embedded images, (image, mirror image): swap them in and out as one."""
        return self.predictor.image_state, self._mirror

    @image_state.setter
    def image_state(self, state) -> None:
        if state is None:
            self.reset_image()
            return
        self.predictor.image_state, self._mirror = state

    @property
    def is_image_set(self) -> bool:
        return self.predictor.is_image_set and self._mirror is not None

    def reset_image(self) -> None:
        self.predictor.reset_image()
        self._mirror = None

    # --- the embedded image's and the model's sizes, as the wrapped predictor's --------
    _PASSED = frozenset({"original_size", "input_size", "mask_threshold", "img_size", "mask_input_size", "model_type"})

    def __getattr__(self, name: str):
        if name in FlipPredictor._PASSED:
            return getattr(self.predictor, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --- prompts ---------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `Predictor.predict` (single or batched prompts, original pixel frame); each output
        is the mean of the answers on the image and on its mirror image."""
        if not self.is_image_set:
            raise ValueError("no image is set; call set_image(image) first")
        # the wrapped predictor checks the prompts and says what is wrong with them
        low, iou, plain, batched = self.predictor._predict_low_res(point_coords, point_labels, box, mask_input,
                                                                   multimask_output)
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
            m_mask = mirror_low_res(mask_input, (height, width), self.img_size)
        self.predictor.image_state = self._mirror
        try:
            m_low, m_iou, _, _ = self.predictor._predict_low_res(m_coords, point_labels, m_box, m_mask,
                                                                 multimask_output)
        finally:
            self.predictor.image_state = plain
        low, m_low = _numpy(low), _numpy(m_low)
        # Averaged in the model's input frame and brought to full size once: the second bilinear
        # step commutes with the mirror and with the mean, so this is the mean of the two
        # full-size answers at half the cost.
        mean = input_frame_logits(low, plain.input_size, self.img_size)
        mean += input_frame_logits(m_low, plain.input_size, self.img_size)[..., ::-1]
        mean *= 0.5
        out = (
            original_frame_logits(mean, (height, width), self.mask_threshold, return_logits),
            (_numpy(iou) + _numpy(m_iou)) / 2,
            (low + mirror_low_res(m_low, (height, width), self.img_size)) / 2,
        )
        return out if batched else tuple(a[0] for a in out)

    # --- everything mode: MaskGenerator asks many single clicks of the embedded pair ------
    def _require_image(self):
        if not self.is_image_set:
            raise ValueError("no image is set; call set_image(image) first")
        return self.image_state

    def decode_points(self, state, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One foreground click per prompt on the pair `state` (image, mirror image), points
        (n, 2) in the original frame -> the three candidates' low-res logits (n, 3, h, w) and IoU
        predictions (n, 3), each the mean of the two views' (in the image's low-res frame)."""
        plain, mirror = state
        low, iou = self.predictor.decode_points(plain, points)
        mirrored = np.array(points, dtype=np.float32)
        mirrored[:, 0] = _mirror_x(mirrored[:, 0], plain.original_size[1])
        m_low, m_iou = self.predictor.decode_points(mirror, mirrored)
        m_low = mirror_low_res(_numpy(m_low), plain.original_size, self.img_size)
        return (_numpy(low) + m_low) / 2, (_numpy(iou) + _numpy(m_iou)) / 2

    def _postprocess_numpy(self, low_res, state, return_logits: bool) -> np.ndarray:
        """Low-res logits in the image's frame -> full size, as the wrapped predictor does."""
        return self.predictor._postprocess_numpy(low_res, state[0], return_logits)


def _numpy(a) -> np.ndarray:
    """A torch tensor or an array as a float32 array (torch is not imported here)."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)
