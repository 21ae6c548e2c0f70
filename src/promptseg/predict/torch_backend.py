"""The torch backend: embed an image once, then answer prompts in milliseconds.

The numpy/PIL boundary of the package: images and prompts come in as arrays in the original
image's pixel frame, masks and scores go out as arrays. Drop-in for SAM's `SamPredictor`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cpu import fit_threads, tune_allocator
from ..io import ImageLike, check_image_shape, read_image
from ..model import Sam
from ..prompts import check_prompts
from ..transforms import (
    ResizeLongestSide,
    ResizeSquare,
    check_clean_up,
    fill_holes_and_sprinkles,
    full_size_logits_np,
)
from ..weights import SAM2_SETTINGS, SAM_SETTINGS, WeightsSettings
from .contract import LowResAnswer
from .state import EmbeddedImage, ImageState, check_hq_token_only

_DECODE_CHUNK = 8  # prompts decoded together in `decode_points`


class Predictor(EmbeddedImage):
    """Computes an image embedding once and predicts masks for any number of prompts on it."""

    _how_to_set = "call set_image(image) (or load_embedding(path)) first"

    def __init__(self, sam_model: Sam, mask_threshold: float | None = None, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0) -> None:
        """`mask_threshold` (None: the model's, 0) turns logits into masks; `max_hole_area` and
        `max_sprinkle_area` (low-res pixels, 0: off) fill small holes in and remove small specks
        from the low-res logits before they are brought to full size, as SAM 2's predictor does."""
        tune_allocator()
        fit_threads()
        self.model = sam_model.eval()
        self.transform = (ResizeSquare if sam_model.square_input else ResizeLongestSide)(sam_model.img_size)
        self._mask_threshold = sam_model.mask_threshold if mask_threshold is None else float(mask_threshold)
        check_clean_up(max_hole_area, max_sprinkle_area)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self.low_res_limit = sam_model.low_res_limit
        self.square_input = sam_model.square_input
        self.hq = sam_model.hq
        self._state: ImageState | None = None
        self._batch: list[ImageState] = []

    # --- state, with the attribute names SAM's predictor users reach for ---------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- embedding ------------------------------------------------------------------
    def _prepare(self, image: ImageLike, image_format: str) -> tuple[torch.Tensor, tuple[int, int]]:
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arr = read_image(image)
        if image_format != self.model.image_format:
            arr = np.ascontiguousarray(arr[..., ::-1])
        if self.model.square_input:  # SAM 2: [0, 1] floats resized (antialiased) to the square
            size = self.model.img_size
            check_image_shape(arr.shape[0], arr.shape[1])
            x = torch.from_numpy(np.ascontiguousarray(arr) if arr.flags.writeable else arr.copy())
            x = x.to(self.device).permute(2, 0, 1)[None].float().div(255)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return x[0], (arr.shape[0], arr.shape[1])
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
        """Embed an image already resized by `self.transform` as a (1, 3, h, w) tensor (SAM 2's
        models: resized to the square input, values in [0, 1])."""
        if transformed_image.ndim != 4 or transformed_image.shape[:2] != (1, 3):
            raise ValueError(f"transformed_image must be (1, 3, h, w), got {tuple(transformed_image.shape)}")
        size = self.model.img_size
        if self.model.square_input and tuple(transformed_image.shape[2:]) != (size, size):
            raise ValueError(f"transformed_image must be {size}x{size} for this model (SAM 2 resizes to a square)")
        if max(transformed_image.shape[2:]) != size:
            raise ValueError(
                f"the longest side of transformed_image must be {size}; resize it with "
                "predictor.transform.apply_image"
            )
        self.reset_image()
        features, high_res = self.model.encode(self.model.preprocess(transformed_image.float()))
        self._state = ImageState(
            features, tuple(int(v) for v in original_image_size[:2]), tuple(transformed_image.shape[-2:]),
            high_res=high_res,
        )

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
            features, high_res = self.model.encode(batch)
            for i, ((t, original), feat) in enumerate(zip(prepared, features)):
                levels = None if high_res is None else tuple(f[i : i + 1] for f in high_res)
                states.append(ImageState(feat[None], original, tuple(t.shape[-2:]), high_res=levels))
        self._batch = states
        self._state = states[0]

    @property
    def image_batch(self) -> list[ImageState]:
        """The embedded images of the last `set_image_batch`, in order."""
        return list(self._batch)

    def clear_image_batch(self) -> None:
        self._batch = []

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
    def save_embedding(self, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
        """Write the current embedding and its sizes to a .safetensors file (atomically), with
        `extra` string metadata beside them (e.g. the file the image came from)."""
        from safetensors.torch import save_file

        from ..io import atomic_path

        state = self.image_state
        meta = {
            **{str(k): str(v) for k, v in (extra or {}).items()},
            "original_size": json.dumps(list(state.original_size)),
            "input_size": json.dumps(list(state.input_size)),
            "img_size": str(self.model.img_size),
            "model_type": str(self.model.model_type),
        }
        tensors = {"image_embedding": state.features}
        for i, level in enumerate(state.high_res or ()):
            tensors[f"high_res_{i}"] = level
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)

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
                high_res = tuple(f.get_tensor(k) for k in sorted(k for k in f.keys() if k.startswith("high_res_")))
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
        expected_levels = self._high_res_shapes()
        if tuple(tuple(t.shape) for t in high_res) != expected_levels:
            raise ValueError(
                f"embedding in {path} has high-resolution levels {[tuple(t.shape) for t in high_res]}, but this "
                f"model expects {list(expected_levels)}; embed the image again with this model"
            )
        levels = tuple(t.to(self.device).contiguous(memory_format=torch.channels_last) for t in high_res)
        self._state = ImageState(features.to(self.device), original, input_size, high_res=levels or None)

    def _high_res_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the extra feature levels this model's embeddings carry (SAM 2's two, HQ-SAM's
        HQ features), else ()."""
        decoder = self.model.mask_decoder
        h, w = self.model.prompt_encoder.image_embedding_size
        if self.model.hq:
            return ((1, self.model.prompt_encoder.embed_dim // 8, 4 * h, 4 * w),)
        if not getattr(decoder, "use_high_res_features", False):
            return ()
        return (1, decoder.conv_s0.out_channels, 4 * h, 4 * w), (1, decoder.conv_s1.out_channels, 2 * h, 2 * w)

    # --- prompts ---------------------------------------------------------------------
    def predict_low_res(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                        multimask_output: bool = True, hq_token_only: bool = False) -> LowResAnswer:
        """`predict`'s checks and decoder pass, without bringing the answer to full size: low-res
        logits (B, C, h, w) and IoU predictions (B, C) as tensors, the image's state, and whether
        the prompts came batched."""
        state = self.image_state
        coords, labels, boxes, masks, n, batched = check_prompts(
            state.original_size, point_coords, point_labels, box, mask_input, self.mask_input_size,
            multimask_output=multimask_output,
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
            low_res, iou, obj = self._decode(state, pts, lab, box_t, mask_t, multimask_output,
                                             hq_token_only=hq_token_only)
        return LowResAnswer(low_res, iou, state, batched, obj)

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prediction with prompts already in the model's input frame (see `transform`):
        point_coords (B, N, 2), point_labels (B, N), boxes (B, 4), mask_input (B, 1, 256, 256).
        Returns masks (B, C, H, W), IoU predictions (B, C) and low-res logits (B, C, 256, 256)."""
        state = self.image_state
        low_res, iou, _ = self._decode(state, point_coords, point_labels, boxes, mask_input, multimask_output,
                                       hq_token_only=hq_token_only)
        masks = self.model.postprocess_masks(self._cleaned(low_res), state.input_size, state.original_size)
        if not return_logits:
            masks = masks > self.mask_threshold
        if self.low_res_limit is not None:
            low_res = low_res.clamp(-self.low_res_limit, self.low_res_limit)
        return masks, iou, low_res

    @property
    def mask_threshold(self) -> float:
        return self._mask_threshold

    @property
    def img_size(self) -> int:
        """The model's input side (as `OnnxPredictor.img_size`)."""
        return self.model.img_size

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """The low-res mask input's (h, w) (as `OnnxPredictor.mask_input_size`)."""
        return tuple(self.model.prompt_encoder.mask_input_size)

    @property
    def model_type(self) -> str | None:
        return self.model.model_type

    @property
    def settings(self) -> WeightsSettings:
        """The settings chosen for the loaded weights (SAM's, or SAM 2's, when they have none)."""
        if self.model.weights_settings is not None:
            return self.model.weights_settings
        return SAM2_SETTINGS if self.model.family == "sam2" else SAM_SETTINGS

    @torch.inference_mode()
    def decode_points(self, state: ImageState, points: np.ndarray, min_iou: float | None = None,
                      hq_token_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One foreground click per prompt, points (n, 2) in the original frame -> the three
        candidates' low-res logits (n, 3, h, w) and IoU predictions (n, 3) (everything mode).
        With `min_iou`, the logits of a prompt none of whose candidates predicts an IoU above it
        are not computed (NaN). HQ-SAM: each click's one answer (n, 1, h, w), (n, 1)."""
        coords = torch.as_tensor(self.transform.apply_coords(points, state.original_size), dtype=torch.float)
        labels = torch.ones(len(points), dtype=torch.int)
        # Decoded a few prompts at a time: 8 measured fastest here of 1 to 16 (each prompt's
        # transformer tensors are (4096, 256) floats; the upscaling goes a prompt at a time).
        parts = [
            self._decode(state, coords[i : i + _DECODE_CHUNK, None], labels[i : i + _DECODE_CHUNK, None], None, None,
                         True, min_iou, hq_token_only)[:2]
            for i in range(0, len(points), _DECODE_CHUNK)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _decode(self, state, point_coords, point_labels, boxes, mask_input, multimask_output, min_iou=None,
                hq_token_only=False):
        hq_token_only = check_hq_token_only(hq_token_only, self.hq)
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
        return self.model.mask_decoder(state.features, image_pe, sparse, dense, multimask_output, prepared, min_iou,
                                       high_res=state.high_res, object_scores=True, hq_token_only=hq_token_only)

    def _cleaned(self, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits with small holes and specks removed, when the predictor was asked to."""
        if self.max_hole_area <= 0 and self.max_sprinkle_area <= 0:
            return low_res
        cleaned = fill_holes_and_sprinkles(low_res.detach().float().cpu().numpy(), self.mask_threshold,
                                           self.max_hole_area, self.max_sprinkle_area)
        return torch.from_numpy(cleaned).to(low_res.device)

    def postprocess(self, low_res, state: ImageState, return_logits: bool = False) -> np.ndarray:
        """Low-res logits (B, M, 256, 256), a tensor or an array -> full-size masks (or logits) as
        numpy: the same two bilinear steps as `Sam.postprocess_masks`, with OpenCV on the CPU
        (`upscale_logits`)."""
        if isinstance(low_res, torch.Tensor):
            if low_res.device.type != "cpu":
                with torch.inference_mode():
                    masks = self.model.postprocess_masks(self._cleaned(low_res), state.input_size, state.original_size)
                return (masks if return_logits else masks > self.mask_threshold).cpu().numpy()
            low_res = low_res.detach().float().numpy()
        return full_size_logits_np(low_res, state.input_size, state.original_size, self.model.img_size,
                                   self.mask_threshold, return_logits, self.square_input, self.max_hole_area,
                                   self.max_sprinkle_area)
