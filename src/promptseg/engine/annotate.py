"""The data engine's fully automatic stage: everything mode over unlabelled photos, keeping
confident, stable masks, written as SA-1B shards that training reads back (self-training).

As in SAM's data engine, a mask is kept when its predicted IoU and stability clear the
thresholds, duplicates are removed by NMS, and masks covering 95 % or more of the image
(usually "the whole picture") are dropped.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ..formats import sa1b_json
from ..io import InputPath, atomic_path, write_json
from .batch import Item, run_batch

MAX_IMAGE_FRACTION = 0.95


def auto_annotate(generator, paths: list[InputPath], out_dir: Path, advance: Callable[[], None] = lambda: None):
    """Annotate each image into out_dir as sa_<name>.<ext> + sa_<name>.json; images already done
    are skipped, unreadable ones reported (`promptseg.engine.batch`). Returns (annotated, masks
    kept, [(path, why)])."""
    process = annotate_processor(generator, out_dir)
    summary = run_batch(paths, out_dir, lambda name: annotate_target(out_dir, name), process, lambda s: advance())
    return summary.done, summary.masks, summary.failures


def annotate_processor(generator, out_dir: Path) -> Callable[[Item], int]:
    """The per-image step of `auto_annotate`: the image and its kept masks written, their count
    returned."""

    def process(item: Item) -> int:
        rgb = item.image()
        records = generator.generate(rgb)
        h, w = rgb.shape[:2]
        records = [r for r in records if r["area"] < MAX_IMAGE_FRACTION * h * w]
        image_name = f"sa_{item.name}{item.path.suffix.lower()}"
        with atomic_path(out_dir / image_name) as tmp:
            if item.data is None:
                shutil.copyfile(item.path, tmp)
            else:
                tmp.write_bytes(item.data)
        doc = sa1b_json(records, item.image_id, image_name, w, h)
        doc["image"]["source"] = f"promptseg engine (automatic stage) from {item.path.name}"
        doc["image"]["source_sha256"] = item.key
        write_json(doc, annotate_target(out_dir, item.name))  # written last: its presence marks the image done
        return len(records)

    return process


def annotate_target(out_dir: Path, name: str) -> Path:
    return out_dir / f"sa_{name}.json"
