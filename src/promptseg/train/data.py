"""Training data: SA-1B and COCO readers, and batches of (image, object masks) for the loop."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..io import IMAGE_SUFFIXES, read_image


@dataclass
class Entry:
    """One image and the COCO RLE masks annotated on it."""

    image_path: Path
    rles: list[dict]
    image: np.ndarray | None = field(default=None, repr=False)  # decoded once, on first use

    def load(self) -> np.ndarray:
        if self.image is None:
            self.image = read_image(self.image_path)
        return self.image


def _rle_from_segmentation(seg, height: int, width: int) -> dict | None:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygons
        if not seg:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, height, width)
    if isinstance(seg, dict) and "counts" in seg:
        return seg
    return None


def _entry(image: Path, anns: list[dict], height: int, width: int) -> Entry | None:
    """An Entry from one image's annotations, or None when none of them has a usable mask."""
    rles = [r for r in (_rle_from_segmentation(a["segmentation"], height, width) for a in anns) if r is not None]
    return Entry(image, rles) if rles else None


def read_sa1b(folder: str | Path) -> list[Entry]:
    """A folder of SA-1B pairs: <stem>.json ({"image": {...}, "annotations": [...]}) beside the image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SA-1B folder {folder} does not exist")
    entries = []
    for js in sorted(folder.glob("*.json")):
        if js.name.startswith("."):
            continue  # a file still being written
        try:
            doc = json.loads(js.read_text())
            info, anns = doc["image"], doc["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # not an SA-1B record (e.g. a manifest)
        image = folder / info.get("file_name", "")
        if not image.is_file():
            image = next((p for p in (js.with_suffix(s) for s in IMAGE_SUFFIXES) if p.is_file()), None)
        if image is None:
            continue
        entry = _entry(image, anns, int(info["height"]), int(info["width"]))
        if entry is not None:
            entries.append(entry)
    if not entries:
        raise ValueError(f"{folder} holds no SA-1B image/JSON pairs with annotations")
    return entries


def read_coco(instances: str | Path, images: str | Path) -> list[Entry]:
    """A COCO instances file (polygons or RLE) and its image folder; crowd regions are skipped."""
    instances, images = Path(instances), Path(images)
    doc = json.loads(instances.read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in doc.get("annotations", []):
        if not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append(ann)
    entries = []
    for info in doc.get("images", []):
        path = images / info["file_name"]
        anns = by_image.get(info["id"], [])
        if not anns or not path.is_file():
            continue
        entry = _entry(path, anns, int(info["height"]), int(info["width"]))
        if entry is not None:
            entries.append(entry)
    if not entries:
        raise ValueError(f"{instances} holds no annotated images found under {images}")
    return entries


def config_path(value: str | Path, base: Path) -> Path:
    """A path written in a training config: `~` expanded, a relative one taken from `base` (the config's folder)."""
    return base / Path(value).expanduser()


def read_source(spec: dict, base: Path) -> list[Entry]:
    """The entries of one [[data]] source; its paths as `config_path` reads them."""
    kind = spec.get("kind", "sa1b")
    path = config_path(spec["path"], base).resolve()
    if kind == "sa1b":
        return read_sa1b(path)
    if kind == "coco":
        return read_coco(path, config_path(spec["images"], base).resolve())
    raise ValueError(f"unknown data kind {kind!r}; use 'sa1b' or 'coco'")


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) float, resized and zero-padded, 0..255
    masks: torch.Tensor  # (B, M, S, S) float 0/1 in the same frame
    sizes: list[tuple[int, int]]  # (h, w) of the unpadded image in each


class MaskSampler:
    """Draws augmented images with `masks_per_image` object masks each from weighted sources."""

    def __init__(self, sources: list[tuple[list[Entry], float]], img_size: int, masks_per_image: int,
                 min_area: float = 0.002, crop_scale: tuple[float, float] = (0.5, 1.0), square: bool = False) -> None:
        """`square`: crops resized to img_size x img_size, their aspect not kept (SAM 2's input);
        else their longest side to img_size and the rest padded (SAM's)."""
        self.sources = [s for s, _ in sources]
        w = np.array([wt for _, wt in sources], np.float64)
        self.weights = w / w.sum()
        self.img_size = img_size
        self.masks_per_image = masks_per_image
        self.min_area = min_area
        self.crop_scale = crop_scale
        self.square = square

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from pycocotools import mask as mask_utils

        src = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
        for _ in range(20):
            entry = src[int(rng.integers(len(src)))]
            image = entry.load()
            h, w = image.shape[:2]
            s = rng.uniform(*self.crop_scale)
            ch, cw = max(8, int(h * s)), max(8, int(w * s * rng.uniform(0.8, 1.25)))
            ch, cw = min(ch, h), min(cw, w)
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            order = rng.permutation(len(entry.rles))
            picked = []
            for k in order:
                m = mask_utils.decode(entry.rles[k])[y0 : y0 + ch, x0 : x0 + cw]
                if m.sum() >= self.min_area * ch * cw and m.mean() < 0.95:
                    picked.append(m)
                    if len(picked) == self.masks_per_image:
                        break
            if picked:
                break
        else:
            raise ValueError("could not find a mask above the minimum area in 20 tries; check the data")
        while len(picked) < self.masks_per_image:
            picked.append(picked[int(rng.integers(len(picked)))])
        crop = image[y0 : y0 + ch, x0 : x0 + cw]
        masks = np.stack(picked, -1)  # (h, w, M)
        if rng.random() < 0.5:
            crop, masks = crop[:, ::-1], masks[:, ::-1]
        scale = self.img_size / max(ch, cw)
        nh, nw = max(1, round(ch * scale)), max(1, round(cw * scale))
        if self.square:
            nh = nw = self.img_size
        crop = cv2.resize(np.ascontiguousarray(crop), (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        masks = cv2.resize(np.ascontiguousarray(masks, dtype=np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
        if masks.ndim == 2:
            masks = masks[..., None]
        return crop, masks > 0.5

    def batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        s, m = self.img_size, self.masks_per_image
        images = torch.zeros(batch_size, 3, s, s)
        masks = torch.zeros(batch_size, m, s, s)
        sizes = []
        for b in range(batch_size):
            crop, mk = self._one(rng)
            h, w = crop.shape[:2]
            images[b, :, :h, :w] = torch.from_numpy(crop).permute(2, 0, 1).float()
            masks[b, :, :h, :w] = torch.from_numpy(mk).permute(2, 0, 1).float()
            sizes.append((h, w))
        return Batch(images, masks, sizes)
