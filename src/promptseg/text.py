"""Text prompts: class names -> boxes (an open-vocabulary detector) -> masks (any predictor), as
Grounded-SAM chains them.

A detector is any object with one method, `detect(image, classes, box_threshold,
text_threshold) -> Detections`, so a YOLO or a file of detections plugs in as easily as the
Hugging Face models `load_detector` builds (Grounding DINO, OWLv2; the `text` extra:
pip install 'promptseg[text]')."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .io import ImageLike, read_image

# Names users may give instead of a hub id or a folder; the first is the default.
DETECTORS = {
    "grounding-dino-tiny": "IDEA-Research/grounding-dino-tiny",
    "grounding-dino-base": "IDEA-Research/grounding-dino-base",
    "owlv2": "google/owlv2-base-patch16-ensemble",
}
DEFAULT_DETECTOR = "grounding-dino-tiny"
BOX_THRESHOLD = 0.35  # Grounded-SAM's defaults
TEXT_THRESHOLD = 0.25
NMS_THRESHOLD = 0.5


def parse_classes(text: str | Sequence[str]) -> list[str]:
    """Class names from "cup. spoon." (or "cup, spoon", or a list): stripped, lower-cased, each
    once, in the order given. ValueError when there are none."""
    parts = re.split(r"[.,;\n]", text) if isinstance(text, str) else list(text)
    classes: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"class names must be strings, got {type(part).__name__}")
        name = " ".join(part.split()).lower()
        if name and name not in classes:
            classes.append(name)
    if not classes:
        raise ValueError("the text names no class; give class names separated by dots, e.g. 'cup. spoon.'")
    return classes


def check_threshold(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass
class Detections:
    """What a detector found: boxes (N, 4) XYXY in the image's pixels, scores (N,) in [0, 1] and
    labels (N,), each an index into the class names it was given."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError(f"a detector gave {len(self.boxes)} boxes, {len(self.scores)} scores and "
                             f"{len(self.labels)} labels; they must be as many")


@runtime_checkable
class Detector(Protocol):
    """An open-vocabulary detector: what `TextPredictor` needs of one."""

    def detect(self, image: np.ndarray, classes: list[str], box_threshold: float,
               text_threshold: float) -> Detections:
        """Boxes of the `classes` in `image` (HxWx3 uint8 RGB) scoring above `box_threshold`;
        `text_threshold`: how sure the match to a class name must be, where the model has one."""


class TextPredictor:
    """Masks for class names: `set_image` once, then `predict_text("cup. spoon.")`.

    The detector's boxes above the thresholds are kept per class by NMS (`nms_threshold`, IoU)
    and go to the predictor as one batched box prompt; each gives one mask (SAM's advice for a
    box) with its predicted IoU as the mask score."""

    def __init__(self, predictor: Any, detector: Detector, box_threshold: float = BOX_THRESHOLD,
                 text_threshold: float = TEXT_THRESHOLD, nms_threshold: float = NMS_THRESHOLD) -> None:
        from .predict.loader import as_predictor

        if not callable(getattr(detector, "detect", None)):
            raise ValueError(f"a detector needs a detect(image, classes, box_threshold, text_threshold) method; "
                             f"{type(detector).__name__} has none")
        self.predictor = as_predictor(predictor)
        self.detector = detector
        self.box_threshold = check_threshold("box threshold", box_threshold)
        self.text_threshold = check_threshold("text threshold", text_threshold)
        self.nms_threshold = check_threshold("NMS threshold", nms_threshold)
        self._image: np.ndarray | None = None

    def set_image(self, image: ImageLike, image_state: Any = None) -> None:
        """Embed an image (path, URI, PIL image or array) for the predictor, and keep it for the
        detector; with `image_state` (that image's, already embedded), the encoder does not run."""
        rgb = read_image(image)
        if image_state is None:
            self.predictor.set_image(rgb)
        else:
            self.predictor.image_state = image_state
        self._image = rgb

    def predict_text(self, text: str | Sequence[str], box_threshold: float | None = None,
                     text_threshold: float | None = None, output_mode: str = "binary_mask") -> list[dict]:
        """One record per object found, best score first: `label` (the class name),
        `category_id` (its place in the class names, from 1), `score` (the detector's), `box`
        (the detector's, XYXY), `predicted_iou` (the mask's score), `segmentation` (a bool mask,
        or COCO RLE with output_mode "coco_rle"), `area` and `bbox` (the mask's, XYWH)."""
        if self._image is None:
            raise ValueError("no image is set; call set_image(image) first")
        if output_mode not in ("binary_mask", "coco_rle"):
            raise ValueError(f"output_mode must be binary_mask or coco_rle, got {output_mode!r}")
        classes = parse_classes(text)
        box_t = self.box_threshold if box_threshold is None else check_threshold("box threshold", box_threshold)
        text_t = self.text_threshold if text_threshold is None else check_threshold("text threshold", text_threshold)
        found = self.detector.detect(self._image, classes, box_t, text_t)
        if not isinstance(found, Detections):
            found = Detections(*found)
        found = keep_per_class(found, len(classes), box_t, self.nms_threshold, self._image.shape[:2])
        if not len(found.boxes):
            return []
        masks, ious, _ = self.predictor.predict(box=found.boxes, multimask_output=False)
        n = len(found.boxes)  # one box comes back without the batch axis
        masks = np.asarray(masks).reshape(n, -1, *np.shape(masks)[-2:])[:, 0]
        return text_records(found, classes, masks, np.asarray(ious).reshape(n, -1)[:, 0], output_mode)


def keep_per_class(found: Detections, n_classes: int, box_threshold: float, nms_threshold: float,
                   image_hw: tuple[int, int]) -> Detections:
    """Detections above the threshold, clipped to the image, with a width and height, NMS'd per
    class, best score first."""
    import torch
    from torchvision.ops import batched_nms

    h, w = image_hw
    boxes = found.boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    ok = ((found.scores >= box_threshold) & (found.labels >= 0) & (found.labels < n_classes)
          & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(boxes).all(1))
    boxes, scores, labels = boxes[ok], found.scores[ok], found.labels[ok]
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels),
                       nms_threshold).numpy()
    return Detections(boxes[keep], scores[keep], labels[keep])


def text_records(found: Detections, classes: list[str], masks: np.ndarray, ious: np.ndarray,
                 output_mode: str = "binary_mask") -> list[dict]:
    """The records `predict_text` returns, from kept detections and their masks (N, H, W)."""
    from . import masks as M

    records = []
    for box, score, label, mask, iou in zip(found.boxes, found.scores, found.labels, masks, ious):
        mask = np.asarray(mask, dtype=bool)
        records.append({
            "label": classes[int(label)],
            "category_id": int(label) + 1,
            "score": float(score),
            "box": [float(v) for v in box],
            "predicted_iou": float(iou),
            "segmentation": M.coco_rle(M.mask_to_rle(mask)) if output_mode == "coco_rle" else mask,
            "area": int(mask.sum()),
            "bbox": [float(v) for v in M.box_xyxy_to_xywh(M.mask_to_box(mask))],
        })
    return records


def caption(record: dict) -> str:
    """A text-prompt record's tag in pictures: its label and detector score ("cup 0.87")."""
    return f"{record['label']} {record['score']:.2f}"


def coco_categories(classes: list[str]) -> list[dict]:
    """COCO categories for class names: ids 1, 2, ... in the order given, so the same --text gives
    the same ids on every run."""
    return [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(classes, start=1)]


# --- Hugging Face detectors -------------------------------------------------------------------


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ValueError("text prompts need Hugging Face transformers: pip install 'promptseg[text]'") from None
    return transformers


def load_detector(name: str | os.PathLike | None = None, device: str = "cpu") -> Detector:
    """A Hugging Face detector by short name (grounding-dino-tiny, grounding-dino-base, owlv2),
    hub id (IDEA-Research/grounding-dino-base) or local folder (a saved model and processor). Its
    kind comes from the folder's config: Grounding DINO (and MM Grounding DINO) or OWLv2.
    ValueError, saying what to do, for an unknown name or files that do not load."""
    source, model_type = resolve_detector(name)
    return (Owlv2Detector if model_type == "owlv2" else GroundingDinoDetector)(source, device)


def resolve_detector(name: str | os.PathLike | None = None) -> tuple[str, str]:
    """(hub id or folder, model type) of the detector `name` names, checked without loading it:
    ValueError for an unknown name, a folder without a model, a model of another kind, or a hub
    id that is neither cached nor reachable."""
    _transformers()
    name = DEFAULT_DETECTOR if name is None else str(name)
    source = DETECTORS.get(name, name)
    folder = Path(source).expanduser()
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise ValueError(f"detector folder {folder} has no config.json; save a model there with "
                             "save_pretrained (model and processor)")
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {folder / 'config.json'}: {exc}") from None
        source = str(folder)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith(("/", ".")):
        model_type = "owlv2" if "owlv2" in source.lower() else "grounding-dino"
        _check_hub(source)
    else:
        raise ValueError(f"unknown detector {name!r}: give {', '.join(DETECTORS)}, a Hugging Face hub id "
                         "(owner/name) or a folder holding a saved model")
    if model_type not in ("grounding-dino", "mm-grounding-dino", "owlv2"):
        raise ValueError(f"{source} holds a {model_type!r} model; text prompts take Grounding DINO or OWLv2")
    return source, model_type


def _check_hub(repo: str) -> None:
    """ValueError at once, instead of the hub client's minutes of retries, when `repo` is not in
    the local Hugging Face cache and the hub cannot be reached."""
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants, snapshot_download

        snapshot_download(repo, local_files_only=True)
        return  # cached
    except Exception:  # noqa: BLE001 - not cached (or no hub client): try the network
        pass
    import socket

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
    except OSError as exc:
        raise ValueError(f"cannot fetch the detector {repo}: {constants.ENDPOINT} cannot be reached ({exc}); "
                         "save it with save_pretrained on a machine with internet and pass the folder") from None


class _HFDetector:
    """A transformers zero-shot detector and its processor, loaded by hub id or folder."""

    model_class = "AutoModelForZeroShotObjectDetection"

    def __init__(self, source: str, device: str = "cpu") -> None:
        t = _transformers()
        t.utils.logging.disable_progress_bar()  # its bar for loading weights: the CLI shows its own status
        try:
            self.processor = t.AutoProcessor.from_pretrained(source)
            self.model = getattr(t, self.model_class).from_pretrained(source).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - hub, network, file or format errors: one line for the user
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = ("" if Path(source).exists() else "; without internet, save it with save_pretrained where "
                    "you can and pass the folder")
            raise ValueError(f"cannot load the detector {source}: {first}{hint}") from None
        self.source = source
        self.device = device

    def _run(self, image: np.ndarray, text: Any):
        import torch
        from PIL import Image

        inputs = self.processor(images=Image.fromarray(image), text=text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            return inputs, self.model(**inputs)


class GroundingDinoDetector(_HFDetector):
    """Grounding DINO through transformers: the classes joined as "cup. spoon." (chunked to the
    model's text length), boxes and scores from the processor's own post-processing, each box
    given the class whose words it matches best above `text_threshold`."""

    def detect(self, image, classes, box_threshold=BOX_THRESHOLD, text_threshold=TEXT_THRESHOLD) -> Detections:
        boxes, scores, labels = [], [], []
        for start, chunk in self.class_chunks(classes):
            found = self._detect(image, chunk, box_threshold, text_threshold)
            boxes.append(found.boxes)
            scores.append(found.scores)
            labels.append(found.labels + start)
        return Detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels))

    def class_chunks(self, classes: list[str]):
        """(index of the first, class names) of each group that fits the model's text length."""
        limit = int(getattr(self.model.config, "max_text_len", 256)) - 2  # [CLS] and [SEP]
        chunk, used, start = [], 0, 0
        for i, name in enumerate(classes):
            n = len(self.processor.tokenizer.tokenize(f"{name} .")) if hasattr(self.processor, "tokenizer") else 1
            if chunk and used + n > limit:
                yield start, chunk
                chunk, used, start = [], 0, i
            chunk.append(name)
            used += n
        yield start, chunk

    def _detect(self, image, classes, box_threshold, text_threshold) -> Detections:
        import torch

        prompt = "".join(f"{name}. " for name in classes).strip()
        inputs, outputs = self._run(image, prompt)
        h, w = image.shape[:2]
        result = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
            target_sizes=[(h, w)])[0]
        # which class each kept box matches: its best token probability within each class's words
        probs = torch.sigmoid(outputs.logits[0]).float()
        kept = probs.max(-1).values > box_threshold  # the boxes the post-processing kept, in order
        spans = self._class_tokens(prompt, classes)
        per_class = torch.stack([probs[kept][:, idx].max(-1).values if idx else torch.zeros(int(kept.sum()))
                                 for idx in spans], dim=1) if int(kept.sum()) else torch.zeros(0, len(classes))
        best, label = per_class.max(-1) if len(per_class) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
        matched = (best > text_threshold).numpy()
        boxes = result["boxes"].float().numpy()
        scores = result["scores"].float().numpy()
        if len(boxes) != len(matched):  # a post-processing that kept other boxes than its documented rule
            raise ValueError("the installed transformers' Grounding DINO post-processing changed; "
                             "pin transformers as promptseg[text] does")
        return Detections(boxes[matched], scores[matched], label.numpy()[matched])

    def _class_tokens(self, prompt: str, classes: list[str]) -> list[list[int]]:
        """The token positions of each class name in the prompt."""
        encoding = self.processor.tokenizer(prompt)
        spans, at = [], 0
        for name in classes:
            start = prompt.index(name, at)
            at = start + len(name)
            idx = sorted({t for c in range(start, at) if (t := encoding.char_to_token(c)) is not None})
            spans.append(idx)
        return spans


class Owlv2Detector(_HFDetector):
    """OWLv2 through transformers: one text query per class; boxes, scores and labels from the
    processor's own post-processing (one threshold: `box_threshold`; OWLv2 has no text one)."""

    def detect(self, image, classes, box_threshold=0.1, text_threshold=TEXT_THRESHOLD) -> Detections:
        inputs, outputs = self._run(image, [classes])
        side = max(image.shape[:2])  # OWLv2 pads the image to a square; its boxes are in that frame
        result = self.processor.post_process_grounded_object_detection(
            outputs, threshold=box_threshold, target_sizes=[(side, side)])[0]
        return Detections(result["boxes"].float().numpy(), result["scores"].float().numpy(),
                          np.asarray(result["labels"]))
