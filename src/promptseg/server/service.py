"""The model behind the routes: one worker thread for all model work, the embedded-image cache,
and the decoder exported for browsers."""

from __future__ import annotations

import asyncio
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import HTTPException

from ..predict import FlipPredictor, Predictor, PromptPredictor
from .cache import CachedImage, ImageCache


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


class ModelService:
    """Model work runs on one worker thread, off the event loop: requests queue for it instead
    of being dropped, and the model never runs twice at once. Clients uploading the same image
    at once share one embedding."""

    def __init__(self, predictor: PromptPredictor, settings: ServerSettings) -> None:
        self.predictor = predictor
        # everything mode and the decoder export use the torch predictor itself (never mirror-averaged)
        self.plain: Predictor = predictor.predictor if isinstance(predictor, FlipPredictor) else predictor
        if not isinstance(self.plain, Predictor):
            raise ValueError("the server runs the torch backend; pass a Sam model or a torch Predictor")
        self.model = self.plain.model
        self.settings = settings
        self.cache = ImageCache(settings.cache_bytes)
        self.stats = {"requests": 0, "embeddings": 0}
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptseg-model")
        self._pending: dict[str, asyncio.Future] = {}
        self.decoder_dir = tempfile.TemporaryDirectory(prefix="promptseg-decoder-")  # removed with the service
        self._decoder: Path | None = None
        self._decoder_lock = asyncio.Lock()

    async def run(self, fn, *args):
        """`fn(*args)` on the model's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    def _embed(self, image: np.ndarray) -> CachedImage:
        self.predictor.set_image(image)
        self.stats["embeddings"] += 1
        return CachedImage(image, self.predictor.image_state)

    async def embedded(self, image_id: str, image: np.ndarray) -> tuple[CachedImage, bool]:
        """The cached entry for an image and whether it was there, embedding it once however
        many clients ask at once."""
        entry = self.cache.get(image_id)
        if entry is not None:
            return entry, True
        if image_id in self._pending:
            return await asyncio.shield(self._pending[image_id]), True
        future = asyncio.get_running_loop().create_future()
        self._pending[image_id] = future
        try:
            entry = await self.run(self._embed, image)
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
