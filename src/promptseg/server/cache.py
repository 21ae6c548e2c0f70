"""Embedded images by id, in an LRU cache bounded by a byte budget."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

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

    def trim(self) -> None:
        while len(self.entries) > 1 and self.total() > self.budget:
            self.entries.popitem(last=False)

    def total(self) -> int:
        return sum(e.nbytes for e in self.entries.values())
