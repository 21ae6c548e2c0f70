"""Everything mode over many images on this machine, into SA-1B JSON, COCO or PNG masks.

A re-run skips images already done (each image's JSON is written last, atomically, so its
presence marks the image done, and it records the SHA-256 of the file it was made from); a file
that cannot be read is reported and skipped, and the others go on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..everything import MaskGenerator
from ..formats import sa1b_json, write_png_masks
from ..io import InputPath, overlay, write_image, write_json
from ..masks import decode_coco_rle
from ..text import caption
from .batch import BatchSummary, Item

FORMATS = ("sa1b", "coco", "png")


JobSummary = BatchSummary  # the name this module gave it first


def result_path(output: Path, name: str, fmt: str) -> Path:
    if fmt == "sa1b":
        return output / f"{name}.json"
    if fmt == "png":
        return output / name / "masks.json"
    return output / ".parts" / f"{name}.json"


def everything_job(generator: MaskGenerator, paths: list[InputPath], output: Path, fmt: str = "sa1b",
                   overlays: bool = True, quiet: bool = False) -> BatchSummary:
    """Every object in each image of `paths`, written into `output` as `fmt` (sa1b: a JSON per
    image; coco: one annotations.json; png: a folder of masks per image), with an overlay
    picture per image when `overlays`. The generator should give coco_rle records. What a
    re-run skips, and what a failure or a killed run leaves: `promptseg.engine.batch`."""
    from .jobs import JobSpec
    from .run import run_job

    spec = JobSpec("everything", str(output), fmt=fmt, overlays=overlays)  # checks the format
    return run_job(spec, paths, quiet=quiet, label="everything",
                   process=everything_processor(generator, output, fmt, overlays))


def everything_processor(generator: MaskGenerator, output: Path, fmt: str, overlays: bool):
    """The per-image step of `everything_job`: its outputs written, its mask count returned."""
    return records_processor(generator.generate, output, fmt, overlays)


def label_processor(text_predictor, classes: list[str], output: Path, fmt: str, overlays: bool):
    """The per-image step of a `label` job: the objects of `classes` that `text_predictor` (a
    `promptseg.text.TextPredictor`) finds, written as everything mode writes its masks, each
    record with its label, category id and scores."""

    def find(rgb):
        text_predictor.set_image(rgb)
        return text_predictor.predict_text(classes, output_mode="coco_rle")

    return records_processor(find, output, fmt, overlays)


def records_processor(find: Callable[[np.ndarray], list[dict]], output: Path, fmt: str, overlays: bool):
    """A per-image step that writes the records `find(rgb)` gives, in `fmt`, with an overlay."""

    def process(item: Item) -> int:
        rgb = item.image()
        records = find(rgb)
        _write_image_result(records, rgb, item, output, fmt, overlays)
        return len(records)

    return process


def _write_image_result(records: list[dict], rgb, item: Item, output: Path, fmt: str, overlays: bool) -> None:
    h, w = rgb.shape[:2]
    name = item.name
    if fmt == "png":
        write_png_masks(records, output / name)
    if overlays:
        masks = [decode_coco_rle(r["segmentation"]) for r in records]
        captions = [caption(r) for r in records] if records and "label" in records[0] else None
        write_image(overlay(rgb, masks, captions=captions), output / name / "overlay.png" if fmt == "png" else output / f"{name}_overlay.png")
    doc = sa1b_json(records, item.image_id, item.path.name, w, h)
    doc["image"]["source_sha256"] = item.key
    write_json(doc, result_path(output, name, fmt))  # written last: it marks the image done
