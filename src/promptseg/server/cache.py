"""Embedded images by id, in an LRU cache, and the memory budget that bounds them together
with the uploads being decoded and embedded."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import HTTPException

from ..predict import ImageState

HANDLES_PER_IMAGE = 32  # low-res logits kept per image for refinement


@dataclass
class CachedImage:
    """An uploaded image, its embedding (with the mirror image's when the server averages with
    it) and the low-res logits of recent answers, by handle."""

    image: np.ndarray
    state: ImageState
    logits: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.state.nbytes + sum(a.nbytes for a in self.logits.values())

    def keep_logits(self, handle: str, logits: np.ndarray) -> None:
        """Keep an answer's low-res logits for a later `mask_input`, the most recent only."""
        self.logits[handle] = logits
        while len(self.logits) > HANDLES_PER_IMAGE:
            self.logits.popitem(last=False)


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

    def trim(self, room: int | None = None) -> None:
        """Evict least recently used images until they hold at most `room` bytes (the budget)."""
        room = self.budget if room is None else room
        while self.entries and self.total() > room:
            self.entries.popitem(last=False)

    def total(self) -> int:
        return sum(e.nbytes for e in self.entries.values())


RETRY_AFTER_S = 2


class MemoryBudget:
    """One byte budget for everything the server holds for images: the cached ones, and the
    uploads being received, decoded and embedded (reserved before they are read, from their
    declared size). Room is made by evicting cached images; when there is still none, the
    request is refused with 503 and Retry-After, rather than the server growing."""

    def __init__(self, cache: ImageCache) -> None:
        self.cache = cache
        self.reserved = 0
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        return self.cache.budget

    def held(self) -> int:
        return self.cache.total() + self.reserved

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold `nbytes` of the budget for the block. HTTPException 413 when `what` could never
        fit, 503 (with Retry-After) when it does not fit now."""
        mib = 2**20
        if nbytes > self.budget:
            raise HTTPException(413, f"{what} needs {nbytes / mib:.0f} MiB, over this server's memory budget of "
                                     f"{self.budget / mib:.0f} MiB for images (promptseg serve --cache-mb)")
        with self._lock:
            if self.cache.total() + self.reserved + nbytes > self.budget:
                self.cache.trim(self.budget - self.reserved - nbytes)
            if self.cache.total() + self.reserved + nbytes > self.budget:
                raise HTTPException(
                    503, f"the server is holding as many images as its memory budget allows; try again in "
                         f"{RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})
            self.reserved += nbytes
        try:
            yield
        finally:
            with self._lock:
                self.reserved -= nbytes
