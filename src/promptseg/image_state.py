"""The embedded-image accessors SAM's predictor users reach for, shared by the torch and the
ONNX Runtime predictors (no torch here)."""

from __future__ import annotations


class EmbeddedImage:
    """Mixin: `self._state` holds the embedded image (features, original_size, input_size) or None."""

    _state = None
    _how_to_set = "call set_image(image) first"

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    @property
    def features(self):
        return self._require_image().features

    @property
    def original_size(self) -> tuple[int, int]:
        return self._require_image().original_size

    @property
    def input_size(self) -> tuple[int, int]:
        return self._require_image().input_size

    @property
    def image_state(self):
        """The embedded image prompts are answered on; a server holding many embedded images
        swaps them in and out here instead of embedding again."""
        return self._require_image()

    @image_state.setter
    def image_state(self, state) -> None:
        self._state = state

    def get_image_embedding(self):
        return self.features

    def reset_image(self) -> None:
        self._state = None

    def _require_image(self):
        if self._state is None:
            raise ValueError(f"no image is set; {self._how_to_set}")
        return self._state
