"""A job over many images described as data (`JobSpec`), so that any process can rebuild it: the
local engine runs it here, a Ray worker rebuilds the same predictor and the same per-image step
from it. Four kinds: `everything` (every object, into SA-1B JSON, COCO or PNG masks), `label`
(the objects of given class names, found by a text-prompted detector, `promptseg.text`, in the
same formats), `engine` (the data engine's automatic stage, an SA-1B shard for training) and
`embed` (one embedding file per image, which `Predictor.load_embedding` reads)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import Item

KINDS = ("everything", "label", "engine", "embed")


@dataclass(frozen=True)
class JobSpec:
    """What to run and where its outputs go; the model as `load_predictor` names it."""

    kind: str
    output: str
    fmt: str = "sa1b"  # everything, label: sa1b, coco or png
    overlays: bool = True  # everything, label: a picture of the masks per image
    generator: dict[str, Any] = field(default_factory=dict)  # MaskGenerator options (everything, engine)
    # label: classes (names), detector (as load_detector takes it), box_threshold, text_threshold
    text: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    checkpoint: str | None = None
    backend: str = "torch"
    flip: bool = False
    onnx_dir: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"job kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        from .local import FORMATS

        if self.kind in ("everything", "label") and self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.kind == "label":
            from ..text import check_threshold, parse_classes

            parse_classes(self.text.get("classes", ()))
            for key in ("box_threshold", "text_threshold"):
                if key in self.text:
                    check_threshold(key.replace("_", " "), self.text[key])
        if self.kind == "embed" and (self.backend != "torch" or self.flip):
            raise ValueError("embed writes the torch predictor's embeddings; use --backend torch without --flip")

    def check(self) -> None:
        """Fail early, without loading the model, when its weights (or ONNX files) are not
        there: the error names what is missing and how to get it."""
        from ..checkpoints import load_model, weights_file

        if self.backend != "torch" and self.onnx_dir is not None and not Path(self.onnx_dir).is_dir():
            raise FileNotFoundError(f"--onnx-dir {self.onnx_dir} not found; write it with `promptseg export`")
        if not weights_file(self.model, self.checkpoint).is_file():
            load_model(self.model, self.checkpoint)  # raises the loader's message for what is missing
        if self.kind == "label":
            from ..text import resolve_detector

            resolve_detector(self.text.get("detector"))  # an unknown or unreachable detector: one line, before work

    @property
    def folder(self) -> Path:
        return Path(self.output)

    def target(self, name: str) -> Path:
        """The file whose presence marks an image done (written last, atomically)."""
        if self.kind == "engine":
            from .annotate import annotate_target

            return annotate_target(self.folder, name)
        if self.kind == "embed":
            return self.folder / f"{name}.safetensors"
        from .local import result_path

        return result_path(self.folder, name, self.fmt)

    def predictor(self, device: str = "cpu"):
        from ..predict import load_predictor

        return load_predictor(self.model, checkpoint=self.checkpoint, backend=self.backend, flip=self.flip,
                              onnx_dir=self.onnx_dir, device=device)

    def processor(self, predictor=None, device: str = "cpu") -> Callable[[Item], int]:
        """The per-image step (writes that image's outputs, returns its mask count), on
        `predictor` or on one built from this spec (and the detector, for label, on `device`)."""
        predictor = predictor if predictor is not None else self.predictor(device)
        if self.kind == "embed":
            return embed_processor(predictor, self.folder)
        if self.kind == "label":
            from ..text import TextPredictor, load_detector, parse_classes
            from .local import label_processor

            options = {k: self.text[k] for k in ("box_threshold", "text_threshold") if k in self.text}
            text = TextPredictor(predictor, load_detector(self.text.get("detector"), device), **options)
            return label_processor(text, parse_classes(self.text["classes"]), self.folder, self.fmt, self.overlays)
        from ..everything import MaskGenerator

        generator = MaskGenerator(predictor, **{**self.generator, "output_mode": "coco_rle"})
        if self.kind == "engine":
            from .annotate import annotate_processor

            return annotate_processor(generator, self.folder)
        from .local import everything_processor

        return everything_processor(generator, self.folder, self.fmt, self.overlays)

    def finish(self, names: list[str]) -> None:
        """Work after every image is done: COCO's one annotations file."""
        if self.kind in ("everything", "label") and self.fmt == "coco":
            from ..formats import merge_coco

            parts = [(i, self.target(n)) for i, n in enumerate(names, start=1)]
            if self.kind == "everything":
                merge_coco(parts, self.folder / "annotations.json")
            else:
                from ..text import coco_categories, parse_classes

                merge_coco(parts, self.folder / "annotations.json", coco_categories(parse_classes(self.text["classes"])),
                           "masks from promptseg label (text prompts)")


def embed_processor(predictor, out_dir: Path) -> Callable[[Item], int]:
    """Embed each image and write `<name>.safetensors`, recording the file it was made from."""

    def process(item: Item) -> int:
        predictor.set_image(item.image())
        predictor.save_embedding(out_dir / f"{item.name}.safetensors",
                                 extra={"source_sha256": item.key, "file_name": item.path.name})
        return 0

    return process
