"""`OnnxPredictor`: SAM's predictor interface on ONNX Runtime, with numpy only (no torch).

It runs the `encoder.onnx` / `decoder.onnx` pair written by `promptseg export`, of SAM's models,
of SAM 2's (whose graphs also carry the high-resolution feature levels) or of HQ-SAM's (whose
graphs carry the HQ features, and whose decoder gives the HQ token's mask beside SAM's four).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..cpu import thread_count
from ..io import ImageLike, read_image
from ..prompts import check_prompts
from ..transforms import (
    ResizeLongestSide,
    ResizeSquare,
    check_clean_up,
    full_size_logits_np,
    preprocess_shape,
    resize_square,
)
from ..weights import SAM2_SETTINGS, SAM_SETTINGS, SETTINGS_KEY, WeightsSettings
from .contract import LowResAnswer
from .state import EmbeddedImage, ImageState, check_hq_token_only

PRECISIONS = ("fp32", "int8")


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or thread_count()
    options.log_severity_level = 3
    # no busy-waiting worker threads between runs: they would take the cores from whatever runs
    # next (the rest of the program, or torch), which on a 2-core machine costs more than it saves
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxPredictor(EmbeddedImage):
    """Embed an image once with `encoder.onnx`, answer prompts with `decoder.onnx`.

    Same calls as `promptseg.Predictor` (and SAM's `SamPredictor`): `set_image`, `predict`,
    `get_image_embedding`, `reset_image`; inputs and outputs are numpy arrays in the original
    image's pixel frame. `precision="int8"` runs the quantized files (`--quantize int8`).
    For SAM 2's models, `mask_threshold`, `max_hole_area` and `max_sprinkle_area` are
    `promptseg.Predictor`'s options."""

    def __init__(self, model_dir: str | os.PathLike, precision: str = "fp32", threads: int | None = None,
                 mask_threshold: float | None = None, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0) -> None:
        check_clean_up(max_hole_area, max_sprinkle_area)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        folder = Path(model_dir)
        suffix = ".int8.onnx" if precision == "int8" else ".onnx"
        paths = {name: folder / f"{name}{suffix}" for name in ("encoder", "decoder")}
        for path in paths.values():
            if not path.is_file():
                hint = " --quantize int8" if precision == "int8" else ""
                raise FileNotFoundError(f"{path} not found; write it with `promptseg export -o {folder}{hint}`")
        self.encoder = _session(paths["encoder"], threads)
        self.decoder = _session(paths["decoder"], threads)
        meta = self.encoder.get_modelmeta().custom_metadata_map
        try:
            self.img_size = int(meta["img_size"])
            self.embedding_shape = tuple(int(v) for v in meta["embedding_shape"].split(","))
            self.mask_threshold = float(meta["mask_threshold"]) if mask_threshold is None else float(mask_threshold)
            self.family = meta.get("family", "sam")
            self.square_input = self.family == "sam2"
            if self.family == "sam2":
                self.low_res_limit = float(meta["low_res_limit"])
                self.high_res_shapes = tuple(
                    (1, *(int(v) for v in level.split(","))) for level in meta["high_res_shapes"].split(";")
                )
                fallback = meta.get("dynamic_multimask")
                self.dynamic_multimask = None if fallback is None else tuple(float(v) for v in fallback.split(","))
            self.hq = meta.get("hq") == "1"
            if self.hq:
                self.high_res_shapes = ((1, *(int(v) for v in meta["hq_features_shape"].split(","))),)
        except (KeyError, ValueError):
            raise ValueError(f"{paths['encoder']} was not written by `promptseg export` (its metadata is missing)") from None
        self.model_type = meta.get("model_type")
        # the settings chosen for the exported weights (SAM's or SAM 2's when the export carries none)
        settings = meta.get(SETTINGS_KEY)
        default = SAM2_SETTINGS if self.family == "sam2" else SAM_SETTINGS
        self.settings = default if settings is None else WeightsSettings.from_metadata(settings)
        self.image_format = meta.get("image_format", "RGB")
        self.precision = precision
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        g = self.embedding_shape[1:]
        self.mask_input_size = (4 * g[0], 4 * g[1])
        self.transform = (ResizeSquare if self.family == "sam2" else ResizeLongestSide)(self.img_size)
        self._state: ImageState | None = None

    # --- embedding ------------------------------------------------------------------
    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Embed an image: an HxWx3 uint8 array, a PIL image or a path."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arr = read_image(image)
        if image_format != self.image_format:
            arr = np.ascontiguousarray(arr[..., ::-1])
        if self.family == "sam2":  # resized (antialiased) to the square
            resized = resize_square(arr, self.img_size)
        else:
            resized = self.transform.apply_image(arr).astype(np.float32)
        features, *high_res = self.encoder.run(None, {"input_image": resized})
        self._state = ImageState(features, (arr.shape[0], arr.shape[1]), resized.shape[:2],
                                 high_res=tuple(high_res) or None)

    def set_embedding(self, features: np.ndarray, original_size: tuple[int, int],
                      high_res: tuple[np.ndarray, ...] | None = None) -> None:
        """Set the current image from an embedding computed elsewhere (e.g. by a server); SAM 2's
        models also need its `high_res` levels (4x, 8x), HQ-SAM's its `(hq_features,)`."""
        features = np.asarray(features, dtype=np.float32)
        if features.shape != (1, *self.embedding_shape):
            raise ValueError(f"embedding has shape {features.shape}; this model expects {(1, *self.embedding_shape)}")
        h, w = (int(v) for v in original_size)
        levels = None
        if self.hq:
            levels = tuple(np.asarray(f, dtype=np.float32) for f in high_res or ())
            if tuple(f.shape for f in levels) != self.high_res_shapes:
                raise ValueError(f"this HQ-SAM model needs the image's HQ features, high_res=(array of shape "
                                 f"{self.high_res_shapes[0]},)")
        if self.family == "sam2":
            if high_res is None or len(high_res) != 2:
                raise ValueError("this SAM 2 model needs the embedding's two high-res levels (high_res=(4x, 8x))")
            levels = tuple(np.asarray(f, dtype=np.float32) for f in high_res)
            if tuple(f.shape for f in levels) != self.high_res_shapes:
                raise ValueError(f"high-res levels have shapes {[f.shape for f in levels]}; this model expects "
                                 f"{list(self.high_res_shapes)}")
            self._state = ImageState(features, (h, w), (self.img_size, self.img_size), high_res=levels)
            return
        self._state = ImageState(features, (h, w), preprocess_shape(h, w, self.img_size), high_res=levels)

    # --- prompts ---------------------------------------------------------------------
    def _prompt_points(self, state: ImageState, coords, labels, box) -> tuple[np.ndarray, np.ndarray]:
        """One prompt as the decoder's points (N, 2) and labels (N,) in the input frame: points,
        then a box as two corner points (labels 2, 3), or a padding point when there is no box.
        SAM 2: the box's corners, the points, and a padding point (no points at all for a mask
        alone)."""
        if self.family == "sam2" and (box is not None or coords is not None):
            pts, labs = [np.zeros((0, 2))], [np.zeros(0)]
            if box is not None:
                pts.append(self.transform.apply_boxes(box[None], state.original_size).reshape(2, 2))
                labs.append(np.array([2.0, 3.0]))
            if coords is not None:
                pts.append(self.transform.apply_coords(coords, state.original_size))
                labs.append(labels)
            return np.concatenate([*pts, np.zeros((1, 2))]), np.concatenate([*labs, [-1.0]])
        pts, labs = [np.zeros((0, 2))], [np.zeros(0)]
        if coords is not None:
            pts.append(self.transform.apply_coords(coords, state.original_size))
            labs.append(labels)
        if box is not None:
            pts.append(self.transform.apply_boxes(box[None], state.original_size).reshape(2, 2))
            labs.append(np.array([2.0, 3.0]))
        elif coords is not None:
            pts.append(np.zeros((1, 2)))
            labs.append(np.array([-1.0]))
        return np.concatenate(pts), np.concatenate(labs)

    def _decode(self, state: ImageState, points: np.ndarray, labels: np.ndarray, mask=None):
        """decoder.onnx on prompts (B, N, 2) / (B, N) in the input frame and an optional mask input
        (1, 1, h, w) -> low-res logits (B, 4, h, w), IoU predictions (B, 4) of all mask tokens and
        object-score logits (B, 1) (10 where the model has none)."""
        feeds = {
            "image_embeddings": state.features,
            **(dict(zip(("high_res_feats_0", "high_res_feats_1"), state.high_res)) if self.family == "sam2" else {}),
            **({"hq_features": state.high_res[0]} if self.hq else {}),
            "point_coords": points.astype(np.float32),
            "point_labels": labels.astype(np.float32),
            "mask_input": (mask if mask is not None else np.zeros((1, 1, *self.mask_input_size))).astype(np.float32),
            "has_mask_input": np.array([0.0 if mask is None else 1.0], dtype=np.float32),
            "orig_im_size": np.array(state.original_size, dtype=np.float32),
        }
        if self.family != "sam2":
            iou, low = self.decoder.run(["iou_predictions", "low_res_masks"], feeds)
            return low, iou, np.full((len(iou), 1), 10.0, dtype=np.float32)
        iou, low, obj = self.decoder.run(["iou_predictions", "low_res_masks", "object_score_logits"], feeds)
        return low, iou, obj

    def _single_mask(self, low: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One prompt's four tokens (4, h, w), (4,) -> its single-mask answer (1, h, w), (1,):
        token 0, or for SAM 2 where token 0's logits are unstable, the best candidate."""
        if self.family != "sam2" or self.dynamic_multimask is None:
            return low[:1], iou[:1]
        delta, threshold = self.dynamic_multimask
        inner, outer = np.count_nonzero(low[0] > delta), np.count_nonzero(low[0] > -delta)
        if (inner / outer if outer > 0 else 1.0) >= threshold:
            return low[:1], iou[:1]
        best = int(np.argmax(iou[1:])) + 1
        return low[best : best + 1], iou[best : best + 1]

    def predict_low_res(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                        multimask_output: bool = True, hq_token_only: bool = False) -> LowResAnswer:
        """`predict`'s checks and decoder passes, without bringing the answers to full size:
        low-res logits (B, C, h, w), IoU predictions (B, C), the image's state, and whether the
        prompts came batched."""
        state = self.image_state
        hq_token_only = check_hq_token_only(hq_token_only, self.hq)
        coords, labels, boxes, masks, n, batched = check_prompts(
            state.original_size, point_coords, point_labels, box, mask_input, self.mask_input_size,
            multimask_output=multimask_output,
        )
        out_iou, out_low, out_obj = [], [], []
        for i in range(n):
            c, lab, b, m = (None if a is None else a[i if len(a) > 1 else 0] for a in (coords, labels, boxes, masks))
            points, point_labels = self._prompt_points(state, c, lab, b)
            low, iou, obj = self._decode(state, points[None], point_labels[None], None if m is None else m[None])
            if self.hq:
                low, iou = self._hq_answer(low, iou, multimask_output, hq_token_only)
                low, iou = low[0], iou[0]
            elif multimask_output:
                low, iou = low[0, 1:4], iou[0, 1:4]
            else:
                low, iou = self._single_mask(low[0], iou[0])
            out_iou.append(iou)
            out_low.append(low)
            out_obj.append(obj[0])
        return LowResAnswer(np.stack(out_low), np.stack(out_iou), state, batched, np.stack(out_obj))

    # --- many single clicks (everything mode) ----------------------------------------
    def postprocess(self, low_res, state: ImageState, return_logits: bool = False) -> np.ndarray:
        """Low-res logits (B, C, h, w) -> full-size masks (bool) or logits: SAM's two bilinear
        steps, or SAM 2's one (after its hole and speck clean-up, when asked for)."""
        return full_size_logits_np(low_res, state.input_size, state.original_size, self.img_size, self.mask_threshold,
                                   return_logits, self.square_input, self.max_hole_area, self.max_sprinkle_area)

    @staticmethod
    def _hq_answer(low: np.ndarray, iou: np.ndarray, multimask_output: bool,
                   hq_token_only: bool) -> tuple[np.ndarray, np.ndarray]:
        """HQ-SAM's five masks (B, 5, h, w) and four IoUs (B, 4) -> one answer per prompt: the HQ
        mask plus the SAM mask (the single-mask token's, or the best candidate's), or alone."""
        rows = np.arange(len(iou))
        pick = np.argmax(iou[:, 1:], axis=1) + 1 if multimask_output else np.zeros(len(iou), dtype=np.int64)
        hq = low[:, 4:5]
        return (hq if hq_token_only else low[rows, pick][:, None] + hq), iou[rows, pick][:, None]

    def decode_points(self, state: ImageState, points: np.ndarray, min_iou: float | None = None,
                      hq_token_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One foreground click per prompt, points (n, 2) in the original frame -> the three
        candidates' low-res logits (n, 3, h, w) and IoU predictions (n, 3) (HQ-SAM: each click's
        one answer). The decoder graph computes every logit, whatever `min_iou`."""
        hq_token_only = check_hq_token_only(hq_token_only, self.hq)
        coords = self.transform.apply_coords(points, state.original_size)
        padded = np.stack([coords, np.zeros_like(coords)], axis=1)  # each click with SAM's padding point
        low, iou, _ = self._decode(state, padded, np.tile([[1.0, -1.0]], (len(coords), 1)))
        if self.hq:
            return self._hq_answer(low, iou, True, hq_token_only)
        return low[:, 1:], iou[:, 1:]
