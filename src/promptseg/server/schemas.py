"""What goes over the wire: request bodies (every field bounded), and uploads and masks in and out."""

from __future__ import annotations

import base64
import io
from typing import Annotated, Literal

import numpy as np
from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt

from .. import masks as M
from ..io import check_image_shape, read_image
from ..refine import REFINERS

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
MAX_POINTS = 64

# JSON numbers only: no strings, booleans, NaN or infinities taken for numbers
Number = Annotated[float, Strict(), AllowInfNan(False)]
Count = StrictInt
Label = Annotated[StrictInt, Field(ge=0, le=1)]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: what was wrong and what to do, in `detail`; for an invalid request
    (422), `errors` names each bad field."""

    detail: str
    errors: list[FieldError] | None = None


_ERROR_TEXT = {
    400: "The upload could not be decoded (truncated or damaged) or is empty, or the JSON body could not be parsed.",
    404: "No such image (never uploaded, or evicted from the cache) or logits handle.",
    411: "A request body without Content-Length.",
    413: "The body, the image's pixels, or the memory it needs is over the server's limits.",
    415: "The upload is not an image in an accepted format.",
    422: "An invalid request: a field of the wrong type or out of range, an image shape the model cannot take, "
         "or everything-mode work over the server's bounds (clicks, or time: it was stopped).",
    503: "The server is busy: its memory budget or its everything-mode queue is full. Retry after Retry-After seconds.",
}


def error_responses(*codes: int) -> dict[int, dict]:
    """OpenAPI `responses` for error codes a route can answer."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


# what a client does with an upload's `id`, as OpenAPI links (clients and API fuzzers follow them)
IMAGE_LINKS = {
    op: {"operationId": op, "parameters": {"image_id": "$response.body#/id"}}
    for op in ("segment", "everything", "embedding")
}


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    point_coords: list[tuple[Number, Number]] | None = Field(None, min_length=1, max_length=MAX_POINTS)
    point_labels: list[Label] | None = Field(None, min_length=1, max_length=MAX_POINTS)
    box: tuple[Number, Number, Number, Number] | None = None
    mask_input: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="a `logits` handle of an earlier answer")
    multimask_output: StrictBool = True
    hq_token_only: StrictBool = Field(False, description="HQ-SAM models: the HQ token's mask alone")
    mask_format: Literal["coco_rle", "rle", "png"] = "coco_rle"
    refine: Literal[(*REFINERS, "none")] | None = Field(
        None, description="refine each mask: zoom (the model looks again at a crop around the answer), grabcut "
        "(GrabCut seeded by the answer and the prompts), zoom+grabcut, or none; unset, the default chosen for "
        "the model's weights (`refine` in /v1/models); scores stay the model's")


class EverythingRequest(BaseModel):
    """Everything mode's options, each bounded; the clicks they ask for in all (points_per_side^2
    times 1, 5 or 21 crops for crop_n_layers 0, 1, 2) are bounded by the server too."""

    model_config = ConfigDict(extra="forbid")
    points_per_side: Count = Field(16, ge=1, le=64)
    pred_iou_thresh: Number | None = Field(None, ge=0, le=1)
    stability_score_thresh: Number | None = Field(None, ge=0, le=1)
    stability_score_offset: Number = Field(1.0, gt=0, le=20)
    box_nms_thresh: Number = Field(0.7, ge=0, le=1)
    crop_n_layers: Count = Field(0, ge=0, le=2)
    min_mask_region_area: Count = Field(0, ge=0, le=10**7)
    hq_token_only: StrictBool = Field(False, description="HQ-SAM models: the HQ token's mask alone")
    mask_format: Literal["coco_rle", "rle"] = "coco_rle"


class TextRequest(BaseModel):
    """Class names to find (`"cup. spoon."`), and the detector's thresholds."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=2000, description="class names separated by dots")
    box_threshold: Number = Field(0.35, ge=0, le=1)
    text_threshold: Number = Field(0.25, ge=0, le=1)
    mask_format: Literal["coco_rle", "rle", "png"] = "coco_rle"


def encode_mask(mask: np.ndarray, fmt: str):
    """A bool mask as the request's `mask_format`: COCO RLE, uncompressed RLE, or base64 PNG."""
    if fmt == "png":
        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    rle = M.mask_to_rle(mask)
    return M.coco_rle(rle) if fmt == "coco_rle" else rle


def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """An uploaded file opened (its header read, nothing decoded yet), with the format sniffed
    from the content and the size checked. Raises HTTPException with the reason."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image is far over {max_pixels / 1e6:.0f} MP") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise HTTPException(415, f"the upload is not an image this server reads ({', '.join(IMAGE_FORMATS)})") from None
    if img.format not in IMAGE_FORMATS:
        raise HTTPException(415, f"image format {img.format} is not accepted; send one of {', '.join(IMAGE_FORMATS)}")
    w, h = img.size
    if w * h > max_pixels:
        raise HTTPException(413, f"image is {w}x{h} = {w * h / 1e6:.1f} MP; this server takes at most {max_pixels / 1e6:.0f} MP")
    try:
        check_image_shape(h, w)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return img


def decode_opened(img: Image.Image) -> np.ndarray:
    """An opened upload decoded into an RGB array (upright per its EXIF tag). Raises
    HTTPException 400 when it cannot be decoded, 422 when its shape cannot be segmented."""
    try:
        rgb = read_image(img)  # decodes; ValueError for a damaged or truncated file
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        check_image_shape(*rgb.shape[:2])  # after the EXIF turn too
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return rgb


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of an uploaded file -> RGB array (`open_upload`, then `decode_opened`)."""
    return decode_opened(open_upload(data, max_pixels))
