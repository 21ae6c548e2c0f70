"""The HTTP API's routes (`router`), over the app's `ModelService`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import secrets
import time
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response

from .. import masks as M
from ..everything import MaskGenerator
from ..io import SAMPLES, sample_image_path
from ..refine import answer_masks
from .cache import CachedImage
from .schemas import (
    IMAGE_LINKS,
    EverythingRequest,
    SegmentRequest,
    TextRequest,
    decode_opened,
    encode_mask,
    error_responses,
    open_upload,
)
from .service import ModelService
from .worker import HeavyJob, Stopped

router = APIRouter()
text_router = APIRouter()  # only on a server started with a detector (ServerSettings.detector)


def service(request: Request) -> ModelService:
    return request.app.state.service


Service = Annotated[ModelService, Depends(service)]


@router.get("/v1/decoder.onnx", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def decoder_onnx(svc: Service) -> FileResponse:
    """The model's prompt encoder and mask decoder as ONNX (the inputs and outputs of Meta's
    export; see `promptseg export`), for clients that decode prompts themselves."""
    return FileResponse(await svc.decoder_file(), media_type="application/octet-stream", filename="decoder.onnx")


@router.get("/healthz")
def healthz(svc: Service) -> dict:
    cache = svc.cache
    return {"status": "ok", "cached_images": len(cache.entries), "cache_bytes": cache.total(),
            "cache_budget_bytes": cache.budget, "reserved_bytes": svc.memory.reserved,
            "everything_jobs": svc.worker.heavy_jobs, **svc.stats}


def _single_mask_fallback(model) -> list[float] | None:
    """SAM 2's (delta, threshold) for the single-mask answer's fallback to the best candidate."""
    fallback = getattr(model.mask_decoder, "dynamic_multimask", None)
    return None if fallback is None else [float(v) for v in fallback]


@router.get("/v1/models")
def models(svc: Service) -> list[dict]:
    model, settings = svc.model, svc.predictor.settings
    pe = model.prompt_encoder
    return [{
        "name": model.model_type or "custom",
        "image_size": model.img_size,
        "embedding_shape": [1, pe.embed_dim, *pe.image_embedding_size],
        "mask_input_size": list(pe.mask_input_size),
        "generator_defaults": settings.generator_defaults,
        "refine": settings.refine,
        "mask_threshold": float(model.mask_threshold),
        # the page's decoding knows SAM's and SAM 2's graphs, not HQ-SAM's (which also reads the HQ features)
        "browser_decoding": svc.settings.web_runtime is not None and not svc.settings.flip and not model.hq,
        "hq": model.hq,  # HQ-SAM: one mask per prompt; hq_token_only applies
        # what a client decoding with decoder.onnx needs besides SAM's conventions (SAM 2's)
        "family": model.family,
        "embedding_levels": ["image_embeddings", "high_res_feats_0", "high_res_feats_1"][
            : 3 if model.family == "sam2" else 1],
        "single_mask_fallback": _single_mask_fallback(model),
        "flip": svc.settings.flip,
        "text_prompts": svc.detector is not None,
        "default": True,
    }]


@router.get("/v1/samples")
def samples() -> list[str]:
    return list(SAMPLES)


@router.get("/v1/samples/{name}", include_in_schema=False)
def sample(name: str) -> FileResponse:
    if name not in SAMPLES:
        raise HTTPException(404, f"no sample {name!r}; choose one of {', '.join(SAMPLES)}")
    return FileResponse(sample_image_path(name), media_type="image/png")


@router.post("/v1/images", operation_id="upload",
             responses={200: {"links": IMAGE_LINKS}, **error_responses(400, 411, 413, 415, 422, 503)})
async def upload(svc: Service,
                 file: Annotated[UploadFile, File(description="an image file (PNG, JPEG, WebP, BMP, GIF, TIFF)")]):
    limit = svc.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload over {limit // 2**20} MiB")
    if not data:
        raise HTTPException(400, "the uploaded file is empty")
    image_id = hashlib.sha256(data).hexdigest()[:32]
    t0 = time.perf_counter()

    async def make() -> CachedImage:
        img = open_upload(data, svc.settings.max_pixels)  # the header only: the size, before decoding
        w, h = img.size
        with svc.memory.reserve(svc.upload_bytes(w, h), f"a {w}x{h} image"):
            rgb = await svc.decode(decode_opened, img)
            return await svc.run(svc.embed, rgb)

    entry, cached = await svc.embedded(image_id, make)
    h, w = entry.state.original_size
    return {"id": image_id, "width": w, "height": h, "cached": cached, "seconds": round(time.perf_counter() - t0, 4)}


@router.post("/v1/images/{image_id}/segment", operation_id="segment",
             responses=error_responses(400, 404, 411, 413, 422))
async def segment(image_id: str, req: SegmentRequest, svc: Service) -> dict:
    entry = svc.lookup(image_id)
    predictor = svc.predictor
    mask_input = None
    if req.mask_input is not None:
        mask_input = entry.logits.get(req.mask_input)
        if mask_input is None:
            raise HTTPException(404, f"no logits handle {req.mask_input!r} for this image; use one from a recent answer")
    coords = np.array(req.point_coords, dtype=np.float64).reshape(-1, 2) if req.point_coords is not None else None
    labels = np.array(req.point_labels) if req.point_labels is not None else None
    box = np.array(req.box) if req.box is not None else None
    refine = predictor.settings.refine if req.refine is None else None if req.refine == "none" else req.refine

    def work():  # on the model thread
        predictor.image_state = entry.state
        t0 = time.perf_counter()
        logits, scores, low_res = predictor.predict(coords, labels, box, None if mask_input is None else mask_input[None],
                                                    multimask_output=req.multimask_output, return_logits=True,
                                                    hq_token_only=req.hq_token_only)
        masks = answer_masks(logits, predictor.mask_threshold, refine, entry.image, coords, labels, box, predictor)
        return (masks, scores, low_res), time.perf_counter() - t0

    try:
        (masks, scores, low_res), seconds = await svc.run(work)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    handles = [secrets.token_hex(16) for _ in low_res]
    for handle, logits in zip(handles, low_res):
        entry.keep_logits(handle, logits)
    svc.cache.trim()
    return {
        "masks": [encode_mask(m, req.mask_format) for m in masks],
        "scores": [float(s) for s in scores],
        "areas": [int(m.sum()) for m in masks],
        "logits": handles,
        "best": int(np.argmax(scores)),
        "mask_format": req.mask_format,
        "seconds": round(seconds, 4),
    }


@router.post("/v1/images/{image_id}/everything", operation_id="everything",
             responses=error_responses(400, 404, 411, 413, 422, 503))
async def everything(image_id: str, req: EverythingRequest, svc: Service, request: Request) -> dict:
    """Every object in the image. Heavy: bounded in clicks (`max_everything_prompts`) and time
    (`everything_seconds`), queued one at a time behind at most `max_everything_jobs - 1`
    others; clicks from other clients are answered between its steps, and it stops when its
    client goes away."""
    entry = svc.lookup(image_id)
    settings = svc.settings
    options = req.model_dump(exclude={"mask_format"})
    try:  # small batches of clicks: short steps, so clicks from other clients wait little
        generator = MaskGenerator(svc.heavy, output_mode="uncompressed_rle", points_per_batch=16, **options)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if generator.prompt_count > settings.max_everything_prompts:
        raise HTTPException(422, f"these options ask for {generator.prompt_count} clicks (points_per_side^2 x "
                                 f"{generator.prompt_count // len(generator.point_grids[0])} crops); this server takes "
                                 f"at most {settings.max_everything_prompts}: lower points_per_side or crop_n_layers")
    if svc.worker.heavy_jobs >= settings.max_everything_jobs:
        svc.stats["refused_busy"] += 1
        raise HTTPException(503, f"the server is running {svc.worker.heavy_jobs} everything requests, its most; "
                                 "try again later", headers={"Retry-After": "10"})
    job = HeavyJob(settings.everything_seconds)

    def work(step):  # on the model thread; `step` answers queued clicks and stops the job when told
        t0 = time.perf_counter()
        records = generator.generate(entry.image, image_state=entry.state, on_step=step)  # no second embedding
        return records, time.perf_counter() - t0

    watcher = asyncio.create_task(_stop_when_gone(request, job))
    try:
        records, seconds = await svc.worker.run_heavy(work, job)
    except Stopped as exc:  # a retry would not help: the request asks for more than this server gives
        svc.stats["everything_stopped"] += 1
        raise HTTPException(422, f"everything mode stopped: {exc}; ask for less work (points_per_side, "
                                 "crop_n_layers)") from None
    finally:
        job.cancel.set()
        watcher.cancel()
    if req.mask_format == "coco_rle":
        for rec in records:
            rec["segmentation"] = M.coco_rle(rec["segmentation"])
    return {"records": records, "seconds": round(seconds, 3)}


@text_router.post("/v1/images/{image_id}/text", operation_id="text",
                  responses=error_responses(400, 404, 411, 413, 422))
async def text(image_id: str, req: TextRequest, svc: Service) -> dict:
    """The objects of the class names in `text`: the server's detector finds their boxes, the
    model a mask for each (`promptseg.text.TextPredictor`); labels, detector scores and mask
    scores with each."""
    from ..text import TextPredictor, parse_classes

    try:
        classes = parse_classes(req.text)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    entry = svc.lookup(image_id)
    finder = TextPredictor(svc.plain, svc.detector, req.box_threshold, req.text_threshold)

    def work():  # on the model thread
        t0 = time.perf_counter()
        finder.set_image(entry.image, image_state=entry.state)
        return finder.predict_text(classes), time.perf_counter() - t0

    try:
        records, seconds = await svc.run(work)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    objects = [{**{k: v for k, v in r.items() if k != "segmentation"},
                "segmentation": encode_mask(r["segmentation"], req.mask_format)} for r in records]
    return {"classes": classes, "objects": objects, "mask_format": req.mask_format, "seconds": round(seconds, 4)}


async def _stop_when_gone(request: Request, job: HeavyJob) -> None:
    """Cancel `job` when the client of `request` disconnects."""
    while not job.cancel.is_set():
        if await request.is_disconnected():
            job.cancel.set()
            return
        await asyncio.sleep(0.25)


@router.get("/v1/images/{image_id}/embedding", operation_id="embedding", responses={
    200: {"content": {"application/octet-stream": {}}}, **error_responses(404, 422)})
def embedding(image_id: str, svc: Service, format: Literal["npy", "raw"] = Query("npy"),  # noqa: A002
              level: Literal["image_embeddings", "high_res_feats_0", "high_res_feats_1"] = Query("image_embeddings"),
              ) -> Response:
    """The image embedding, for clients that run the decoder themselves: an .npy file, or
    raw little-endian float32 with its shape in the X-Embedding-Shape header. SAM 2's decoder
    also reads the 4x and 8x levels: `level=high_res_feats_0` / `high_res_feats_1`, named as
    decoder.onnx's inputs."""
    entry = svc.lookup(image_id)
    if level == "image_embeddings":
        features = entry.state.features
    elif entry.state.high_res is None:
        raise HTTPException(422, f"level {level} exists for SAM 2's models only; the served model has one level, "
                            "level=image_embeddings")
    else:
        features = entry.state.high_res[int(level[-1])]
    features = features.detach().cpu().float().contiguous().numpy()
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
