"""Predictor: embed an image once, then answer prompts in milliseconds.

The numpy/PIL boundary of the package: images and prompts come in as arrays in the original
image's pixel frame, masks and scores go out as arrays. Drop-in for SAM's `SamPredictor`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import ImageLike, read_image
from .model import Sam
from .runtime import tune_allocator
from .transforms import ResizeLongestSide


@dataclass
class ImageState:
    """An embedded image: the encoder output and the sizes needed to map masks back."""

    features: torch.Tensor  # (1, C, h, w)
    original_size: tuple[int, int]  # (H, W) of the image as given
    input_size: tuple[int, int]  # (h, w) after resizing, before padding
    decoder_prepared: dict | None = None  # prompt-independent decoder work, made on first use
    image_pe: torch.Tensor | None = None  # positional encoding of the embedding grid, made on first use


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {type(value).__name__}") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values: {arr.tolist() if arr.size <= 8 else '...'}")
    return arr


def check_prompts(
    original_size: tuple[int, int],
    point_coords=None,
    point_labels=None,
    box=None,
    mask_input=None,
    mask_input_size: tuple[int, int] = (256, 256),
):
    """Validate prompts given in the original image frame.

    Returns (coords (B, N, 2), labels (B, N), boxes (B, 4) clipped to the image, masks
    (B, 1, h, w)) with None for absent prompts, the batch size, and whether the call was batched.
    Raises ValueError naming the bad value."""
    h, w = original_size
    if point_coords is None and box is None and mask_input is None:
        raise ValueError("no prompt given: pass point_coords with point_labels, a box, or a mask_input")
    batched = False
    coords = labels = boxes = masks = None
    if (point_coords is None) != (point_labels is None):
        raise ValueError("point_coords and point_labels go together: pass both or neither")
    if point_coords is not None:
        coords = _as_array(point_coords, "point_coords")
        labels = _as_array(point_labels, "point_labels")
        if coords.ndim == 2 and coords.shape[1] == 2:
            coords, expect_labels = coords[None], (coords.shape[0],)
        elif coords.ndim == 3 and coords.shape[2] == 2:
            batched, expect_labels = True, coords.shape[:2]
        else:
            raise ValueError(f"point_coords must be Nx2 (or BxNx2 for a batch), got shape {coords.shape}")
        if labels.shape != expect_labels:
            raise ValueError(f"point_labels must have shape {expect_labels} to match point_coords, got {labels.shape}")
        labels = labels.reshape(coords.shape[:2])
        allowed = (0, 1, -1) if batched else (0, 1)
        bad = labels[~np.isin(labels, allowed)]
        if bad.size:
            raise ValueError(
                f"point_labels must be 1 (foreground) or 0 (background){' or -1 (padding)' if batched else ''}, "
                f"got {bad[0]:g}"
            )
        real = labels != -1
        xs, ys = coords[..., 0][real], coords[..., 1][real]
        outside = (xs < 0) | (xs > w) | (ys < 0) | (ys > h)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(
                f"point ({xs[i]:g}, {ys[i]:g}) is outside the {w}x{h} image; points are (x, y) pixels of the original image"
            )
    if box is not None:
        boxes = _as_array(box, "box")
        if boxes.shape == (4,):
            boxes = boxes[None]
        elif boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.shape[0] >= 1:
            batched = batched or boxes.shape[0] > 1
        else:
            raise ValueError(f"box must be [x0, y0, x1, y1] (or Bx4 for a batch), got shape {boxes.shape}")
        inverted = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if inverted.any():
            raise ValueError(
                f"box {boxes[int(np.argmax(inverted))].tolist()} is empty or inverted; use x0 < x1 and y0 < y1"
            )
        off = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
        if off.any():
            raise ValueError(f"box {boxes[int(np.argmax(off))].tolist()} lies wholly outside the {w}x{h} image")
        boxes = boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    if mask_input is not None:
        masks = _as_array(mask_input, "mask_input").astype(np.float32)
        size = tuple(mask_input_size)
        if masks.shape == size:
            masks = masks[None, None]
        elif masks.shape == (1, *size):
            masks = masks[None]
        elif masks.ndim == 4 and masks.shape[1:] == (1, *size):
            batched = batched or masks.shape[0] > 1
        else:
            raise ValueError(
                f"mask_input must be 1x{size[0]}x{size[1]} low-res logits (e.g. low_res_logits from an earlier "
                f"predict), got shape {masks.shape}"
            )
    sizes = {name: len(a) for name, a in (("points", coords), ("boxes", boxes), ("mask_input", masks)) if a is not None}
    n = max(sizes.values())
    if any(k not in (1, n) for k in sizes.values()):
        raise ValueError(f"batched prompts disagree in count: {sizes}; give each the same batch size")
    return coords, labels, boxes, masks, n, batched


class Predictor:
    """Computes an image embedding once and predicts masks for any number of prompts on it."""

    def __init__(self, sam_model: Sam) -> None:
        tune_allocator()
        self.model = sam_model.eval()
        self.transform = ResizeLongestSide(sam_model.img_size)
        self._state: ImageState | None = None
        self._batch: list[ImageState] = []

    # --- state, with the attribute names SAM's predictor users reach for ---------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    @property
    def features(self) -> torch.Tensor:
        return self._require_image().features

    @property
    def original_size(self) -> tuple[int, int]:
        return self._require_image().original_size

    @property
    def input_size(self) -> tuple[int, int]:
        return self._require_image().input_size

    def reset_image(self) -> None:
        self._state = None

    def _require_image(self) -> ImageState:
        if self._state is None:
            raise ValueError("no image is set; call set_image(image) (or load_embedding(path)) first")
        return self._state

    # --- embedding ------------------------------------------------------------------
    def _prepare(self, image: ImageLike, image_format: str) -> tuple[torch.Tensor, tuple[int, int]]:
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arr = read_image(image)
        if image_format != self.model.image_format:
            arr = np.ascontiguousarray(arr[..., ::-1])
        resized = self.transform.apply_image(arr)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()
        return tensor, (arr.shape[0], arr.shape[1])

    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Embed an image: an HxWx3 uint8 array, a PIL image or a path (gray, RGBA, palette,
        16-bit and EXIF-rotated images are converted)."""
        tensor, original = self._prepare(image, image_format)
        self.set_torch_image(tensor[None], original)

    @torch.inference_mode()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed an image already resized by `self.transform` as a (1, 3, h, w) tensor."""
        if transformed_image.ndim != 4 or transformed_image.shape[:2] != (1, 3):
            raise ValueError(f"transformed_image must be (1, 3, h, w), got {tuple(transformed_image.shape)}")
        if max(transformed_image.shape[2:]) != self.model.img_size:
            raise ValueError(
                f"the longest side of transformed_image must be {self.model.img_size}; resize it with "
                "predictor.transform.apply_image"
            )
        self.reset_image()
        features = self.model.image_encoder(self.model.preprocess(transformed_image.float()))
        self._state = ImageState(
            features, tuple(int(v) for v in original_image_size[:2]), tuple(transformed_image.shape[-2:])
        )

    def get_image_embedding(self) -> torch.Tensor:
        return self.features

    @torch.inference_mode()
    def set_image_batch(self, images: Sequence[ImageLike], image_format: str = "RGB", batch_size: int = 4) -> None:
        """Embed several images (encoder batches of `batch_size`) for `predict_batch`.
        The first image also becomes the current image for `predict`."""
        if len(images) == 0:
            raise ValueError("set_image_batch needs at least one image")
        states: list[ImageState] = []
        for start in range(0, len(images), batch_size):
            prepared = [self._prepare(img, image_format) for img in images[start : start + batch_size]]
            batch = torch.cat([self.model.preprocess(t[None].float()) for t, _ in prepared])
            features = self.model.image_encoder(batch)
            for (t, original), feat in zip(prepared, features):
                states.append(ImageState(feat[None], original, tuple(t.shape[-2:])))
        self._batch = states
        self._state = states[0]

    def predict_batch(self, prompts: Sequence[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One `predict` per image of the last `set_image_batch`: prompts[i] holds the keyword
        arguments of `predict` for image i."""
        if not self._batch:
            raise ValueError("no image batch is set; call set_image_batch(images) first")
        if len(prompts) != len(self._batch):
            raise ValueError(f"got {len(prompts)} prompt sets for {len(self._batch)} images; give one per image")
        current = self._state
        try:
            results = []
            for state, kwargs in zip(self._batch, prompts):
                self._state = state
                results.append(self.predict(**kwargs))
            return results
        finally:
            self._state = current

    # --- saving and loading an embedding ---------------------------------------------
    def save_embedding(self, path: str | os.PathLike) -> None:
        """Write the current embedding and its sizes to a .safetensors file."""
        from safetensors.torch import save_file

        from .io import atomic_path

        state = self._require_image()
        meta = {
            "original_size": json.dumps(list(state.original_size)),
            "input_size": json.dumps(list(state.input_size)),
            "img_size": str(self.model.img_size),
            "model_type": str(self.model.model_type),
        }
        with atomic_path(path) as tmp:
            save_file({"image_embedding": state.features.detach().cpu().contiguous()}, str(tmp), metadata=meta)

    def load_embedding(self, path: str | os.PathLike) -> None:
        """Set the current image from a file written by `save_embedding` (no encoder run)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"embedding file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                features = f.get_tensor("image_embedding")
            original = tuple(json.loads(meta["original_size"]))
            input_size = tuple(json.loads(meta["input_size"]))
        except (SafetensorError, KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not an embedding written by save_embedding ({exc})") from None
        expected = (
            self.model.prompt_encoder.embed_dim,
            *self.model.prompt_encoder.image_embedding_size,
        )
        if tuple(features.shape) != (1, *expected):
            raise ValueError(
                f"embedding in {path} has shape {tuple(features.shape)}, but this model expects {(1, *expected)}"
            )
        saved_type = meta.get("model_type")
        if saved_type not in (None, "None", str(self.model.model_type)) and self.model.model_type is not None:
            raise ValueError(f"embedding in {path} was made by {saved_type}, not {self.model.model_type}")
        self._state = ImageState(features.to(self.device), original, input_size)

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
        """Masks for prompts given in the original image's pixel frame.

        point_coords (N, 2) as (x, y) with point_labels (N,) 1 foreground / 0 background;
        box (4,) as x0, y0, x1, y1; mask_input (1, 256, 256) low-res logits of an earlier call.
        Returns masks (C, H, W) bool (logits with return_logits), scores (C,), and low-res
        logits (C, 256, 256); C is 3 with multimask_output, else 1.

        Batched: point_coords (B, N, 2) with labels (B, N) (-1 pads shorter point sets), boxes
        (B, 4), mask_input (B, 1, 256, 256); every output then gains a leading B axis.
        """
        state = self._require_image()
        coords, labels, boxes, masks, n, batched = check_prompts(
            state.original_size, point_coords, point_labels, box, mask_input, self.model.prompt_encoder.mask_input_size
        )
        dev = self.device
        pts = lab = box_t = mask_t = None
        if coords is not None:
            pts = torch.as_tensor(
                self.transform.apply_coords(coords, state.original_size), dtype=torch.float, device=dev
            )
            lab = torch.as_tensor(labels, dtype=torch.int, device=dev)
            if pts.shape[0] != n:
                pts, lab = pts.expand(n, -1, -1), lab.expand(n, -1)
        if boxes is not None:
            box_t = torch.as_tensor(
                self.transform.apply_boxes(boxes, state.original_size), dtype=torch.float, device=dev
            )
            box_t = box_t.expand(n, -1)
        if masks is not None:
            mask_t = torch.as_tensor(masks, device=dev).expand(n, -1, -1, -1)
        with torch.inference_mode():
            low_res, iou = self._decode(state, pts, lab, box_t, mask_t, multimask_output)
            masks = self._postprocess_numpy(low_res, state, return_logits)
        out = (masks, iou.float().cpu().numpy(), low_res.float().cpu().numpy())
        return out if batched else tuple(a[0] for a in out)

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prediction with prompts already in the model's input frame (see `transform`):
        point_coords (B, N, 2), point_labels (B, N), boxes (B, 4), mask_input (B, 1, 256, 256).
        Returns masks (B, C, H, W), IoU predictions (B, C) and low-res logits (B, C, 256, 256)."""
        state = self._require_image()
        low_res, iou = self._decode(state, point_coords, point_labels, boxes, mask_input, multimask_output)
        masks = self.model.postprocess_masks(low_res, state.input_size, state.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def _decode(self, state, point_coords, point_labels, boxes, mask_input, multimask_output):
        points = (point_coords, point_labels) if point_coords is not None else None
        encoder = self.model.prompt_encoder
        sparse, dense = encoder(points, boxes, mask_input)
        if state.image_pe is None:
            state.image_pe = encoder.get_dense_pe()
        image_pe = state.image_pe
        prepared = None
        if mask_input is None and not encoder.draw_prompts:  # every such prompt shares the no-mask dense embedding
            if state.decoder_prepared is None:
                state.decoder_prepared = self.model.mask_decoder.prepare_image(state.features, image_pe, dense)
            prepared = state.decoder_prepared
        return self.model.mask_decoder(state.features, image_pe, sparse, dense, multimask_output, prepared)

    def _postprocess_numpy(self, low_res: torch.Tensor, state: ImageState, return_logits: bool) -> np.ndarray:
        """Low-res logits (B, M, 256, 256) -> full-size masks (or logits) as numpy.

        The same two bilinear steps as `Sam.postprocess_masks` (upsample to the padded input
        square, crop, resize to the original size), done per mask with OpenCV on the CPU, which
        is about three times faster than torch's kernel here."""
        if low_res.device.type != "cpu":
            masks = self.model.postprocess_masks(low_res, state.input_size, state.original_size)
            return (masks if return_logits else masks > self.model.mask_threshold).cpu().numpy()
        import cv2

        b, m, lh, lw = low_res.shape
        f = self.model.img_size // lw
        (ih, iw), (oh, ow) = state.input_size, state.original_size
        rows, cols = min(lh, -(-ih // f) + 1), min(lw, -(-iw // f) + 1)
        logits = low_res.float().numpy()
        out = np.empty((b, m, oh, ow), dtype=np.float32 if return_logits else bool)
        for i in range(b):
            for j in range(m):
                up = cv2.resize(logits[i, j, :rows, :cols], (cols * f, rows * f), interpolation=cv2.INTER_LINEAR)
                full = cv2.resize(up[:ih, :iw], (ow, oh), interpolation=cv2.INTER_LINEAR)
                if return_logits:
                    out[i, j] = full
                else:
                    np.greater(full, self.model.mask_threshold, out=out[i, j])
        return out
