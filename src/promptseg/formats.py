"""Records from everything mode in the formats users' tools read: SA-1B per-image JSON,
COCO instances, and PNG masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import masks as M


def _coco_segmentation(seg) -> dict:
    if isinstance(seg, np.ndarray):
        return M.coco_rle(M.mask_to_rle(seg))
    if isinstance(seg.get("counts"), list):
        return M.coco_rle(seg)
    return seg


# Fields a record may carry beyond the mask, and how JSON gets them: everything mode's (SAM's
# generator's names) and text prompts' (`promptseg.text`).
_OPTIONAL_FIELDS = {
    "predicted_iou": float,
    "stability_score": float,
    "point_coords": lambda v: [[float(c) for c in p] for p in v],
    "crop_box": lambda v: [float(c) for c in v],
    "label": str,
    "category_id": int,
    "score": float,
    "box": lambda v: [float(c) for c in v],
}


def annotation(record: dict[str, Any], ann_id: int, image_id: int | None = None) -> dict[str, Any]:
    """One mask record as an SA-1B/COCO annotation with a COCO RLE segmentation; with `image_id`,
    COCO's fields too (`category_id` the record's, else 1)."""
    ann = {
        "id": ann_id,
        "segmentation": _coco_segmentation(record["segmentation"]),
        "bbox": [float(v) for v in record["bbox"]],
        "area": int(record["area"]),
    }
    for key, convert in _OPTIONAL_FIELDS.items():
        if key in record:
            ann[key] = convert(record[key])
    if image_id is not None:
        ann["image_id"] = image_id
        ann["category_id"] = int(record.get("category_id", 1))
        ann["iscrowd"] = 0
    return ann


def sa1b_json(records: list[dict], image_id: int, file_name: str, width: int, height: int) -> dict:
    """The SA-1B layout: {"image": {...}, "annotations": [...]}."""
    return {
        "image": {"image_id": image_id, "file_name": file_name, "width": width, "height": height},
        "annotations": [annotation(r, i) for i, r in enumerate(records)],
    }


OBJECT_CATEGORY = [{"id": 1, "name": "object", "supercategory": "object"}]


def coco_json(images: list[dict], annotations: list[dict], categories: list[dict] | None = None,
              description: str = "masks from promptseg everything mode") -> dict:
    """A COCO instances file; `categories` by default one, "object" (everything mode's)."""
    return {
        "info": {"description": description},
        "images": images,
        "annotations": annotations,
        "categories": categories or OBJECT_CATEGORY,
    }


def write_png_masks(records: list[dict], folder: Path) -> list[str]:
    """One 8-bit PNG per mask (0/255), largest first, named mask_000.png ...; mask files of an
    earlier, interrupted or different run beyond these are removed."""
    from .io import write_mask_png

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, r in enumerate(records):
        seg = r["segmentation"]
        mask = seg if isinstance(seg, np.ndarray) else M.decode_coco_rle(_coco_segmentation(seg))
        name = f"mask_{i:03d}.png"
        write_mask_png(mask, folder / name)
        names.append(name)
    for stale in set(p.name for p in folder.glob("mask_*.png")) - set(names):
        (folder / stale).unlink(missing_ok=True)
    return names


def merge_coco(parts: list[tuple[int, Path]], path: Path, categories: list[dict] | None = None,
               description: str = "masks from promptseg everything mode") -> None:
    """One COCO instances file at `path` from per-image SA-1B JSON files, `parts` as (image id,
    file) in order; missing files (images not done) are left out."""
    import json

    from .io import write_json

    images, annotations = [], []
    for image_id, part in parts:
        if not part.exists():
            continue
        doc = json.loads(part.read_text())
        info = doc["image"]
        images.append({"id": image_id, "file_name": info["file_name"], "width": info["width"], "height": info["height"]})
        for ann in doc["annotations"]:
            annotations.append(annotation(ann, len(annotations) + 1, image_id))
    write_json(coco_json(images, annotations, categories, description), path)
