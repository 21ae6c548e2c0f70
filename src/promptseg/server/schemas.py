"""What goes over the wire: request bodies (every field bounded), and uploads and masks in and out."""

from __future__ import annotations

import base64
import io
from typing import Literal

import numpy as np
from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from .. import masks as M
from ..io import read_image
from ..refine import REFINERS

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
MAX_POINTS = 64


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    point_coords: list[tuple[FiniteFloat, FiniteFloat]] | None = Field(None, max_length=MAX_POINTS)
    point_labels: list[Literal[0, 1]] | None = Field(None, max_length=MAX_POINTS)
    box: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None = None
    mask_input: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="a `logits` handle of an earlier answer")
    multimask_output: bool = True
    mask_format: Literal["coco_rle", "rle", "png"] = "coco_rle"
    refine: Literal[(*REFINERS, "none")] | None = Field(
        None, description="refine each mask: zoom (the model looks again at a crop around the answer), grabcut "
        "(GrabCut seeded by the answer and the prompts), zoom+grabcut, or none; unset, the default chosen for "
        "the model's weights (`refine` in /v1/models); scores stay the model's")


class EverythingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points_per_side: int = Field(16, ge=1, le=64)
    pred_iou_thresh: float | None = Field(None, ge=0, le=1)
    stability_score_thresh: float | None = Field(None, ge=0, le=1)
    stability_score_offset: float = Field(1.0, gt=0, le=20)
    box_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_n_layers: int = Field(0, ge=0, le=2)
    min_mask_region_area: int = Field(0, ge=0, le=10**7)
    mask_format: Literal["coco_rle", "rle"] = "coco_rle"


def encode_mask(mask: np.ndarray, fmt: str):
    """A bool mask as the request's `mask_format`: COCO RLE, uncompressed RLE, or base64 PNG."""
    if fmt == "png":
        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    rle = M.mask_to_rle(mask)
    return M.coco_rle(rle) if fmt == "coco_rle" else rle


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of an uploaded file -> RGB array, with the format sniffed from the content and the
    pixel count checked before decoding. Raises HTTPException with the reason."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image is far over {max_pixels / 1e6:.0f} MP") from None
    except (UnidentifiedImageError, OSError):
        raise HTTPException(415, f"the upload is not an image this server reads ({', '.join(IMAGE_FORMATS)})") from None
    if img.format not in IMAGE_FORMATS:
        raise HTTPException(415, f"image format {img.format} is not accepted; send one of {', '.join(IMAGE_FORMATS)}")
    w, h = img.size
    if w * h > max_pixels:
        raise HTTPException(413, f"image is {w}x{h} = {w * h / 1e6:.1f} MP; this server takes at most {max_pixels / 1e6:.0f} MP")
    try:
        img.load()
        return read_image(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"the image could not be decoded ({exc}); is the file complete?") from None
