"""The HTTP API and the web page: upload an image once, then segment it with clicks and boxes.

Model work runs on one worker thread, off the event loop: requests queue for it instead of
being dropped, and the model never runs twice at once. Embedded images live in an LRU cache
bounded by a memory budget; clients uploading the same bytes share one embedding.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import secrets
import tempfile
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from .. import masks as M
from ..everything import MaskGenerator
from ..io import SAMPLES, read_image, sample_image_path
from ..model import Sam
from ..predict import FlipPredictor, ImageState, Predictor, PromptPredictor, load_predictor
from ..refine import REFINERS, answer_masks

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
MAX_POINTS = 64
HANDLES_PER_IMAGE = 32  # low-res logits kept per image for refinement


@dataclass
class ServerSettings:
    max_upload_bytes: int = 25 * 2**20
    max_pixels: int = 40_000_000
    cache_bytes: int = 1024 * 2**20  # embedded images (pixels, embedding, kept logits)
    max_json_bytes: int = 2**20
    # onnxruntime-web's files: when set, the page can decode prompts in the browser
    web_runtime: Path | None = None
    # answer prompts averaged with the mirror image's answers (promptseg.predict.FlipPredictor): each
    # image is embedded twice, and the page decodes on the server (the browser has one embedding)
    flip: bool = False


@dataclass
class CachedImage:
    image: np.ndarray
    state: ImageState  # with the mirror image's, when the server averages with it
    logits: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.state.nbytes + sum(a.nbytes for a in self.logits.values())


class ImageCache:
    """Embedded images by id, least recently used first out when over the byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: OrderedDict[str, CachedImage] = OrderedDict()

    def get(self, image_id: str) -> CachedImage | None:
        entry = self.entries.get(image_id)
        if entry is not None:
            self.entries.move_to_end(image_id)
        return entry

    def put(self, image_id: str, entry: CachedImage) -> None:
        self.entries[image_id] = entry
        self.entries.move_to_end(image_id)
        self.trim()

    def trim(self) -> None:
        while len(self.entries) > 1 and self.total() > self.budget:
            self.entries.popitem(last=False)

    def total(self) -> int:
        return sum(e.nbytes for e in self.entries.values())


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


def _encode_mask(mask: np.ndarray, fmt: str):
    if fmt == "png":
        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    rle = M.mask_to_rle(mask)
    return M.coco_rle(rle) if fmt == "coco_rle" else rle


def decode_upload(data: bytes, settings: ServerSettings) -> np.ndarray:
    """Bytes of an uploaded file -> RGB array, with the format sniffed from the content and the
    pixel count checked before decoding. Raises HTTPException with the reason."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image is far over {settings.max_pixels / 1e6:.0f} MP") from None
    except (UnidentifiedImageError, OSError):
        raise HTTPException(415, f"the upload is not an image this server reads ({', '.join(IMAGE_FORMATS)})") from None
    if img.format not in IMAGE_FORMATS:
        raise HTTPException(415, f"image format {img.format} is not accepted; send one of {', '.join(IMAGE_FORMATS)}")
    w, h = img.size
    if w * h > settings.max_pixels:
        raise HTTPException(
            413, f"image is {w}x{h} = {w * h / 1e6:.1f} MP; this server takes at most {settings.max_pixels / 1e6:.0f} MP"
        )
    try:
        img.load()
        return read_image(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"the image could not be decoded ({exc}); is the file complete?") from None


def create_app(model: Sam | PromptPredictor, settings: ServerSettings | None = None) -> FastAPI:
    """The app for a model, or a torch predictor (`load_predictor(...)`, mirror-averaging or not)."""
    settings = settings or ServerSettings()
    if isinstance(model, Sam):
        predictor = load_predictor(model, flip=settings.flip)
    elif settings.flip and not isinstance(model, FlipPredictor):
        predictor = FlipPredictor(model)
    else:
        predictor = model
    plain = predictor.predictor if isinstance(predictor, FlipPredictor) else predictor
    if not isinstance(plain, Predictor):
        raise ValueError("the server runs the torch backend; pass a Sam model or a torch Predictor")
    settings = replace(settings, flip=isinstance(predictor, FlipPredictor))
    model = plain.model
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptseg-model")
    cache = ImageCache(settings.cache_bytes)
    pending: dict[str, asyncio.Future] = {}
    stats = {"requests": 0, "embeddings": 0}

    app = FastAPI(
        title="promptseg",
        version=_version(),
        summary="Segment Anything: upload an image once, then prompt it with points, boxes and masks.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # field, what was wrong; the offending input is not echoed (it may be huge, or NaN, which JSON cannot carry)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": f"invalid request: {where}", "errors": errors}, status_code=422)

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    @app.middleware("http")
    async def bound_bodies(request: Request, call_next):
        stats["requests"] += 1
        if request.method == "POST":
            length = request.headers.get("content-length")
            limit = settings.max_upload_bytes + 65536 if request.url.path == "/v1/images" else settings.max_json_bytes
            if length is None:
                return JSONResponse({"detail": "send a Content-Length header"}, status_code=411)
            if not length.isdigit() or int(length) > limit:
                return JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
        try:
            return await call_next(request)
        except Exception as exc:  # one bad request never takes the server down
            return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def embed(image: np.ndarray) -> CachedImage:
        predictor.set_image(image)
        stats["embeddings"] += 1
        return CachedImage(image, predictor.image_state)

    async def embedded(image_id: str, image: np.ndarray) -> tuple[CachedImage, bool]:
        """The cached entry for an image, embedding it once however many clients ask at once."""
        entry = cache.get(image_id)
        if entry is not None:
            return entry, True
        if image_id in pending:
            return await asyncio.shield(pending[image_id]), True
        future = asyncio.get_running_loop().create_future()
        pending[image_id] = future
        try:
            entry = await run(embed, image)
            cache.put(image_id, entry)
            future.set_result(entry)
            return entry, False
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked as retrieved: the waiters, if any, get it
            raise
        finally:
            del pending[image_id]

    def lookup(image_id: str) -> CachedImage:
        entry = cache.get(image_id)
        if entry is None:
            raise HTTPException(404, f"no image with id {image_id!r}; upload it with POST /v1/images (it may have been evicted)")
        return entry

    static = resources.files("promptseg") / "server" / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if settings.web_runtime is not None:
        app.mount("/ort", StaticFiles(directory=str(settings.web_runtime)), name="ort")
    decoder_dir = tempfile.TemporaryDirectory(prefix="promptseg-decoder-")
    decoder_file: list[Path] = []  # exported on first request, once
    decoder_lock = asyncio.Lock()

    @app.get("/v1/decoder.onnx", response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}}})
    async def decoder_onnx() -> FileResponse:
        """The model's prompt encoder and mask decoder as ONNX (the inputs and outputs of Meta's
        export; see `promptseg export`), for clients that decode prompts themselves."""
        async with decoder_lock:
            if not decoder_file:
                from ..export.exporter import export_decoder

                decoder_file.append(await run(export_decoder, model, Path(decoder_dir.name) / "decoder.onnx"))
        return FileResponse(decoder_file[0], media_type="application/octet-stream", filename="decoder.onnx")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "cached_images": len(cache.entries), "cache_bytes": cache.total(),
                "cache_budget_bytes": cache.budget, **stats}

    @app.get("/v1/models")
    def models() -> list[dict]:
        pe = model.prompt_encoder
        return [{
            "name": model.model_type or "custom",
            "image_size": model.img_size,
            "embedding_shape": [1, pe.embed_dim, *pe.image_embedding_size],
            "mask_input_size": list(pe.mask_input_size),
            "generator_defaults": predictor.settings.generator_defaults,
            "refine": predictor.settings.refine,
            "mask_threshold": float(model.mask_threshold),
            "browser_decoding": settings.web_runtime is not None and not settings.flip,
            "flip": settings.flip,
            "default": True,
        }]

    @app.get("/v1/samples")
    def samples() -> list[str]:
        return list(SAMPLES)

    @app.get("/v1/samples/{name}", include_in_schema=False)
    def sample(name: str) -> FileResponse:
        if name not in SAMPLES:
            raise HTTPException(404, f"no sample {name!r}; choose one of {', '.join(SAMPLES)}")
        return FileResponse(sample_image_path(name), media_type="image/png")

    @app.post("/v1/images")
    async def upload(file: Annotated[UploadFile, File(description="an image file (PNG, JPEG, WebP, BMP, GIF, TIFF)")]):
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload over {settings.max_upload_bytes // 2**20} MiB")
        if not data:
            raise HTTPException(400, "the uploaded file is empty")
        image_id = hashlib.sha256(data).hexdigest()[:32]
        entry = cache.get(image_id)
        t0 = time.perf_counter()
        if entry is None:
            image = decode_upload(data, settings)
            entry, cached = await embedded(image_id, image)
        else:
            cached = True
        h, w = entry.state.original_size
        return {"id": image_id, "width": w, "height": h, "cached": cached,
                "seconds": round(time.perf_counter() - t0, 4)}

    @app.post("/v1/images/{image_id}/segment")
    async def segment(image_id: str, req: SegmentRequest) -> dict:
        entry = lookup(image_id)
        mask_input = None
        if req.mask_input is not None:
            mask_input = entry.logits.get(req.mask_input)
            if mask_input is None:
                raise HTTPException(404, f"no logits handle {req.mask_input!r} for this image; use one from a recent answer")
        coords = np.array(req.point_coords, dtype=np.float64).reshape(-1, 2) if req.point_coords is not None else None
        labels = np.array(req.point_labels) if req.point_labels is not None else None
        box = np.array(req.box) if req.box is not None else None

        refine = predictor.settings.refine if req.refine is None else None if req.refine == "none" else req.refine

        def work():
            predictor.image_state = entry.state
            t0 = time.perf_counter()
            logits, scores, low_res = predictor.predict(coords, labels, box, None if mask_input is None else mask_input[None],
                                                        multimask_output=req.multimask_output, return_logits=True)
            masks = answer_masks(logits, predictor.mask_threshold, refine, entry.image, coords, labels, box,
                                 predictor)
            return (masks, scores, low_res), time.perf_counter() - t0

        try:
            (masks, scores, low_res), seconds = await run(work)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        handles = []
        for logits in low_res:
            handle = secrets.token_hex(16)
            entry.logits[handle] = logits
            handles.append(handle)
        while len(entry.logits) > HANDLES_PER_IMAGE:
            entry.logits.popitem(last=False)
        cache.trim()
        return {
            "masks": [_encode_mask(m, req.mask_format) for m in masks],
            "scores": [float(s) for s in scores],
            "areas": [int(m.sum()) for m in masks],
            "logits": handles,
            "best": int(np.argmax(scores)),
            "mask_format": req.mask_format,
            "seconds": round(seconds, 4),
        }

    @app.post("/v1/images/{image_id}/everything")
    async def everything(image_id: str, req: EverythingRequest) -> dict:
        entry = lookup(image_id)
        options = req.model_dump(exclude={"mask_format"})

        def work():
            t0 = time.perf_counter()
            generator = MaskGenerator(plain, output_mode="uncompressed_rle", **options)  # never mirror-averaged
            records = generator.generate(entry.image, image_state=entry.state)  # no second embedding
            return records, time.perf_counter() - t0

        records, seconds = await run(work)
        for rec in records:
            if req.mask_format == "coco_rle":
                rec["segmentation"] = M.coco_rle(rec["segmentation"])
        return {"records": records, "seconds": round(seconds, 3)}

    @app.get("/v1/images/{image_id}/embedding")
    def embedding(image_id: str, format: Literal["npy", "raw"] = Query("npy")) -> Response:  # noqa: A002
        """The image embedding, for clients that run the decoder themselves: an .npy file, or
        raw little-endian float32 with its shape in the X-Embedding-Shape header."""
        entry = lookup(image_id)
        features = entry.state.features.detach().cpu().float().numpy()
        headers = {
            "X-Embedding-Shape": ",".join(map(str, features.shape)),
            "X-Original-Size": ",".join(map(str, entry.state.original_size)),
            "X-Input-Size": ",".join(map(str, entry.state.input_size)),
        }
        if format == "raw":
            return Response(features.astype("<f4").tobytes(), media_type="application/octet-stream", headers=headers)
        buf = io.BytesIO()
        np.save(buf, features)
        return Response(buf.getvalue(), media_type="application/octet-stream", headers=headers)

    app.state.cache = cache
    app.state.decoder_dir = decoder_dir  # removed with the app
    return app


def _version() -> str:
    from .. import __version__

    return __version__
