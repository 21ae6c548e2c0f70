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
from ..io import read_image, write_json

MAX_IMAGE_FRACTION = 0.95


def auto_annotate(generator, paths: list[Path], out_dir: Path, advance: Callable[[], None] = lambda: None):
    """Annotate each image into out_dir as sa_<stem>.<ext> + sa_<stem>.json; images already done
    are skipped, unreadable ones reported. Returns (annotated, masks kept, [(path, why)])."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = kept = 0
    failures: list[tuple[str, str]] = []
    for image_id, path in enumerate(paths, start=1):
        stem = f"sa_{path.stem}"
        target = out_dir / f"{stem}.json"
        if target.exists():
            advance()
            continue
        try:
            rgb = read_image(path)
            records = generator.generate(rgb)
        except (ValueError, FileNotFoundError, OSError) as exc:
            failures.append((str(path), str(exc)))
            advance()
            continue
        h, w = rgb.shape[:2]
        records = [r for r in records if r["area"] < MAX_IMAGE_FRACTION * h * w]
        image_name = f"{stem}{path.suffix.lower()}"
        shutil.copyfile(path, out_dir / image_name)
        doc = sa1b_json(records, image_id, image_name, w, h)
        doc["image"]["source"] = f"promptseg engine (automatic stage) from {path.name}"
        write_json(doc, target)  # written last: its presence marks the image done
        done += 1
        kept += len(records)
        advance()
    return done, kept, failures
