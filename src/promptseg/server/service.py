"""The model behind the routes: one thread for all model work (interactive work first, heavy
work in steps), the embedded-image cache within one memory budget, and the decoder exported
for browsers."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from ..predict import FlipPredictor, Predictor, PromptPredictor
from .cache import HANDLES_PER_IMAGE, CachedImage, ImageCache, MemoryBudget
from .worker import ModelWorker


@dataclass
class ServerSettings:
    max_upload_bytes: int = 25 * 2**20
    max_pixels: int = 40_000_000
    # everything held for images: cached ones (pixels, embedding, kept logits) and uploads being
    # received, decoded and embedded
    cache_bytes: int = 1024 * 2**20
    max_json_bytes: int = 2**20
    # everything mode: clicks per request over all crops, seconds of model time per request,
    # requests queued or running at once
    max_everything_prompts: int = 16384
    everything_seconds: float = 120.0
    max_everything_jobs: int = 2
    # onnxruntime-web's files: when set, the page can decode prompts in the browser
    web_runtime: Path | None = None
    # answer prompts averaged with the mirror image's answers (promptseg.predict.FlipPredictor): each
    # image is embedded twice, and the page decodes on the server (the browser has one embedding)
    flip: bool = False
    # text prompts (POST /v1/images/{id}/text): a detector as promptseg.text.load_detector takes it
    # (a short name, hub id or folder), or one already built; None: text prompts are off
    detector: object | None = None


class ModelService:
    """Model work runs on one thread, off the event loop (`ModelWorker`): requests queue for it
    instead of being dropped, the model never runs twice at once, and clicks are answered
    between the steps of everything-mode work. Clients uploading the same image at once share
    one embedding."""

    def __init__(self, predictor: PromptPredictor, settings: ServerSettings) -> None:
        self.predictor = predictor
        # everything mode and the decoder export use the torch predictor itself (never mirror-averaged)
        self.plain: Predictor = predictor.predictor if isinstance(predictor, FlipPredictor) else predictor
        if not isinstance(self.plain, Predictor):
            raise ValueError("the server runs the torch backend; pass a Sam model or a torch Predictor")
        self.model = self.plain.model
        # everything mode's own predictor: its state never meets the clicks answered between its steps
        self.heavy = Predictor(self.model)
        self.settings = settings
        self.cache = ImageCache(settings.cache_bytes)
        self.memory = MemoryBudget(self.cache)
        self.stats = {"requests": 0, "embeddings": 0, "everything_stopped": 0, "refused_busy": 0}
        self.worker = ModelWorker()
        # uploads are decoded off the event loop on one thread of their own: several would each
        # keep a malloc arena of freed pixels, memory the budget cannot see
        self.decoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptseg-decode")
        self._pending: dict[str, asyncio.Future] = {}
        self.decoder_dir = tempfile.TemporaryDirectory(prefix="promptseg-decoder-")  # removed with the service
        self._decoder: Path | None = None
        self._decoder_lock = asyncio.Lock()
        self.detector = None
        if settings.detector is not None:
            from ..text import load_detector

            self.detector = (settings.detector if callable(getattr(settings.detector, "detect", None))
                             else load_detector(settings.detector))

    async def decode(self, fn, *args):
        """`fn(*args)` on the decoding thread."""
        return await asyncio.get_running_loop().run_in_executor(self.decoder_thread, fn, *args)

    async def run(self, fn, *args):
        """`fn(*args)` on the model's thread, as interactive work."""
        return await self.worker.run(fn, *args)

    def upload_bytes(self, width: int, height: int) -> int:
        """Memory an upload of this size takes at most while it is decoded, embedded and cached:
        PIL's decoded image (4 bytes a pixel), an upright copy, the RGB array kept, the
        embedding (twice when mirror-averaging) and the logits kept for refinement."""
        pe = self.model.prompt_encoder
        embedding = 4 * pe.embed_dim * pe.image_embedding_size[0] * pe.image_embedding_size[1]
        embedding *= 2 if self.settings.flip else 1
        logits = HANDLES_PER_IMAGE * 4 * pe.mask_input_size[0] * pe.mask_input_size[1]
        return width * height * (4 + 4 + 3) + embedding + logits

    def embed(self, image: np.ndarray) -> CachedImage:
        """An image embedded (on the model's thread) as a cache entry."""
        self.predictor.set_image(image)
        self.stats["embeddings"] += 1
        return CachedImage(image, self.predictor.image_state)

    async def embedded(self, image_id: str, make: Callable[[], Awaitable[CachedImage]]) -> tuple[CachedImage, bool]:
        """The cached entry for an image and whether it was there; else `make()`'s, cached. However
        many clients ask for the same image at once, `make` runs once and they share its result."""
        entry = self.cache.get(image_id)
        if entry is not None:
            return entry, True
        if image_id in self._pending:
            return await asyncio.shield(self._pending[image_id]), True
        future = asyncio.get_running_loop().create_future()
        self._pending[image_id] = future
        try:
            entry = await make()
            self.cache.put(image_id, entry)
            future.set_result(entry)
            return entry, False
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked as retrieved: the waiters, if any, get it
            raise
        finally:
            del self._pending[image_id]

    def lookup(self, image_id: str) -> CachedImage:
        entry = self.cache.get(image_id)
        if entry is None:
            raise HTTPException(404, f"no image with id {image_id!r}; upload it with POST /v1/images (it may have been evicted)")
        return entry

    async def decoder_file(self) -> Path:
        """decoder.onnx of the served model, exported on first request, once."""
        async with self._decoder_lock:
            if self._decoder is None:
                from ..export.exporter import export_decoder

                self._decoder = await self.run(export_decoder, self.model, Path(self.decoder_dir.name) / "decoder.onnx")
        return self._decoder
