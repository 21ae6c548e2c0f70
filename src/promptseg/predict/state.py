"""The embedded image, one type for every backend (no torch here: the ONNX Runtime path uses it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ImageState:
    """An embedded image: what prompts are answered on.

    `features` is the encoder's output (1, C, h, w), a torch tensor or a numpy array according to
    the backend; `original_size` is the (H, W) of the image as given, `input_size` the (h, w) it
    was resized to before padding. A predictor that averages with the mirror image keeps the
    mirror image's state in `mirror`. The two last fields are the torch backend's prompt-
    independent decoder work, made on first use and kept with the image."""

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    mirror: ImageState | None = None
    image_pe: Any = None
    decoder_prepared: Any = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the embedding(s) (the mirror image's counted too)."""
        own = int(self.features.nbytes)
        return own + (self.mirror.nbytes if self.mirror is not None else 0)


class EmbeddedImage:
    """Mixin for predictors: `self._state` is the current `ImageState` or None, behind the
    accessors SAM's predictor users reach for."""

    _state: ImageState | None = None
    _how_to_set = "call set_image(image) first"

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    @property
    def features(self):
        return self.image_state.features

    @property
    def original_size(self) -> tuple[int, int]:
        return self.image_state.original_size

    @property
    def input_size(self) -> tuple[int, int]:
        return self.image_state.input_size

    @property
    def image_state(self) -> ImageState:
        """The embedded image prompts are answered on; a server holding many embedded images
        swaps them in and out here instead of embedding again. Raises ValueError when none is set."""
        if self._state is None:
            raise ValueError(f"no image is set; {self._how_to_set}")
        return self._state

    @image_state.setter
    def image_state(self, state: ImageState | None) -> None:
        self._state = state

    def get_image_embedding(self):
        return self.features

    def reset_image(self) -> None:
        self._state = None
