"""Evaluation instances from the layouts users have: images/ + masks/ folders (the layout of the
interactive-segmentation benchmarks: GrabCut, Berkeley, DAVIS, COCO MVal), SA-1B folders and
COCO instances files."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import IMAGE_SUFFIXES
from .protocols import Instance

IGNORE_VALUE = 128  # GrabCut's unlabelled boundary band


def readable(items: Iterable, load: Callable, advance: Callable[..., None] = lambda *a, **k: None,
             errors: list[str] | None = None) -> Iterator[tuple]:
    """(item, *load(item)) for each item whose `load` succeeds; an item whose `load` raises
    ValueError or OSError (an unreadable photo, annotations that do not fit it) is reported in
    `errors` as "<item.image_path>: why", counted by `advance()`, and skipped. The caller
    advances after each item it is given."""
    for item in items:
        try:
            loaded = load(item)
        except (ValueError, OSError) as exc:
            if errors is not None:
                errors.append(f"{item.image_path}: {exc}")
            advance()
            continue
        yield (item, *loaded)


def find_image(folder: Path, stem: str) -> Path | None:
    """The image `<stem>.<suffix>` in `folder` for any suffix promptseg reads, or None."""
    for suffix in IMAGE_SUFFIXES:
        for s in (suffix, suffix.upper()):
            p = folder / f"{stem}{s}"
            if p.is_file():
                return p
    return None


def is_mask_folder(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "masks").is_dir()


def read_mask_folder(root: Path, limit: int | None = None) -> list[Instance]:
    """images/<stem>.* with masks/<stem>.png: 255 (or any value > 128) object, 128 ignored, 0 background."""
    out = []
    for mask_path in sorted((root / "masks").glob("*.png")):
        image = find_image(root / "images", mask_path.stem)
        if image is None:
            continue
        m = np.asarray(Image.open(mask_path).convert("L"))
        ignore = m == IGNORE_VALUE
        gt = m > IGNORE_VALUE
        if not gt.any():
            continue
        out.append(Instance(mask_path.stem, root.name, str(image), gt, ignore if ignore.any() else None))
        if limit and len(out) >= limit:
            break
    return out


def _from_entries(entries, name: str, min_area: float, per_image: int, seed: int, limit: int | None):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    out = []
    for entry in entries:
        masks = [mask_utils.decode(r).astype(bool) for r in entry.rles]
        masks = [m for m in masks if m.mean() >= min_area and m.mean() < 0.9]
        for k in rng.permutation(len(masks))[:per_image]:
            out.append(Instance(f"{Path(entry.image_path).stem}#{k}", name, str(entry.image_path), masks[k]))
        if limit and len(out) >= limit:
            return out[:limit]
    return out


def load_dataset(path: str | Path, limit: int | None = None, per_image: int = 5, min_area: float = 0.005,
                 seed: int = 0) -> list[tuple[str, list[Instance]]]:
    """(name, instances) for each dataset under `path`: a mask folder, a folder of mask folders,
    an SA-1B folder, or a COCO instances .json (images in an `images` folder beside it)."""
    from ..train.data import read_coco, read_sa1b

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"evaluation data {path} does not exist")
    if path.is_file() and path.suffix == ".json":
        entries = read_coco(path, path.parent / "images")
        return [(path.stem, _from_entries(entries, path.stem, min_area, per_image, seed, limit))]
    if is_mask_folder(path):
        return [(path.name, read_mask_folder(path, limit))]
    subs = [p for p in sorted(path.iterdir()) if p.is_dir() and is_mask_folder(p)]
    if subs:
        return [(p.name, read_mask_folder(p, limit)) for p in subs]
    if any(path.glob("*.json")):
        entries = read_sa1b(path)
        return [(path.name, _from_entries(entries, path.name, min_area, per_image, seed, limit))]
    raise ValueError(
        f"{path} is not an evaluation dataset: expected images/ + masks/, folders of those, "
        "SA-1B image/JSON pairs, or a COCO instances .json"
    )
