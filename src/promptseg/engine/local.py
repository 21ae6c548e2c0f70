"""Everything mode over many images on this machine, into SA-1B JSON, COCO or PNG masks.

A re-run skips images already done (each image's JSON is written last, atomically, so its
presence marks the image done); a file that cannot be read is reported and skipped, and the
others go on."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..everything import MaskGenerator
from ..formats import merge_coco, sa1b_json, write_png_masks
from ..io import overlay, read_image, write_image, write_json
from ..masks import decode_coco_rle
from ..progress import progress

FORMATS = ("sa1b", "coco", "png")


@dataclass
class JobSummary:
    """What a job did: images segmented, already done, masks found, and (input, why) failures."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    masks: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def output_names(paths: list[Path]) -> list[str]:
    """Output names from file stems; stems seen twice get their parent folder prefixed."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


def _result_path(output: Path, name: str, fmt: str) -> Path:
    if fmt == "sa1b":
        return output / f"{name}.json"
    if fmt == "png":
        return output / name / "masks.json"
    return output / ".parts" / f"{name}.json"


def everything_job(generator: MaskGenerator, paths: list[Path], output: Path, fmt: str = "sa1b",
                   overlays: bool = True, quiet: bool = False) -> JobSummary:
    """Every object in each image of `paths`, written into `output` as `fmt` (sa1b: a JSON per
    image; coco: one annotations.json; png: a folder of masks per image), with an overlay
    picture per image when `overlays`. The generator should give coco_rle records."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    output.mkdir(parents=True, exist_ok=True)
    names = output_names(paths)
    summary = JobSummary(total=len(paths))
    started = time.perf_counter()
    with progress(len(paths), "everything", quiet, info="") as advance:
        for image_id, (path, name) in enumerate(zip(paths, names), start=1):
            target = _result_path(output, name, fmt)
            if target.exists():
                summary.skipped += 1
            else:
                try:
                    rgb = read_image(path)
                    records = generator.generate(rgb)
                except (ValueError, FileNotFoundError, OSError) as exc:
                    summary.failures.append((str(path), str(exc)))
                    records = None
                if records is not None:
                    _write_image_result(records, rgb, path, name, image_id, output, fmt, overlays, target)
                    summary.done += 1
                    summary.masks += len(records)
            minutes = (time.perf_counter() - started) / 60
            rate = f"{summary.done / minutes:.1f}" if summary.done else "-"
            advance(info=f"{summary.masks} masks, {rate} img/min")
    if fmt == "coco":
        merge_coco([(i, _result_path(output, n, fmt)) for i, n in enumerate(names, start=1)],
                   output / "annotations.json")
    return summary


def _write_image_result(records: list[dict], rgb, path: Path, name: str, image_id: int, output: Path, fmt: str,
                        overlays: bool, target: Path) -> None:
    h, w = rgb.shape[:2]
    if fmt == "png":
        write_png_masks(records, output / name)
    if overlays:
        masks = [decode_coco_rle(r["segmentation"]) for r in records]
        write_image(overlay(rgb, masks), output / name / "overlay.png" if fmt == "png" else output / f"{name}_overlay.png")
    write_json(sa1b_json(records, image_id, path.name, w, h), target)  # written last: it marks the image done
