"""Procedural training scenes with exact visible masks, written as SA-1B shards.

Each scene is a background (one or two textured regions) with occluding objects painted
back to front. Objects are ellipses, polygons, smooth blobs or thin curved structures, filled
with flat colour, gradients, smooth noise, stripes or crops of openly licensed photos (the
sample images scikit-image ships). Some objects have parts in another texture, so one click
on a part is ambiguous between the part and the whole object, as in real photos. The image
then gets shading, blur, sensor noise and JPEG compression. Masks are the visible pixels of
every object, part and background region, computed from the paint order, so they are exact.

Everything is a function of (seed, index): the same seed always gives the same scenes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .. import masks as M

# scikit-image's bundled sample photos (public domain / CC0, listed in its data README)
_PHOTO_NAMES = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
    "color.png",
    "moon.png",
    "ihc.png",
)


@cache
def texture_photos() -> tuple[np.ndarray, ...]:
    """RGB float32 [0, 1] photos used as textures; our bundled samples if scikit-image is absent."""
    folders = []
    try:
        import skimage.data

        folders.append(Path(skimage.data.__file__).parent)
    except ImportError:
        pass
    from ..io import read_image, sample_image_path

    paths = [f / n for f in folders for n in _PHOTO_NAMES if (f / n).is_file()]
    paths += [sample_image_path("coffee.png"), sample_image_path("chelsea.png")]
    return tuple(read_image(p).astype(np.float32) / 255.0 for p in paths)


@dataclass(frozen=True)
class SynthOptions:
    width: int = 320
    min_height: int = 224
    max_height: int = 320
    min_objects: int = 3
    max_objects: int = 9
    part_probability: float = 0.35
    min_mask_area: int = 24


class SceneGenerator:
    def __init__(self, seed: int = 0, options: SynthOptions | None = None) -> None:
        self.seed = seed
        self.options = options or SynthOptions()
        self.photos = texture_photos()

    # textures ---------------------------------------------------------------------------
    def _colour(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(0.0, 1.0, 3).astype(np.float32)

    def _texture(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        kind = rng.choice(["flat", "gradient", "noise", "stripes", "photo", "photo"])
        if kind == "flat":
            return np.broadcast_to(self._colour(rng), (h, w, 3)).copy()
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        if kind == "gradient":
            a = rng.uniform(0, 2 * np.pi)
            t = xx * np.cos(a) + yy * np.sin(a)
            t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
            return self._colour(rng) * (1 - t[..., None]) + self._colour(rng) * t[..., None]
        if kind == "noise":
            cells = int(rng.integers(2, 24))
            small = rng.random((cells, cells), dtype=np.float32)
            t = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
            fine = rng.normal(0, rng.uniform(0, 0.08), (h, w)).astype(np.float32)
            t = (t + fine).clip(0, 1)
            return self._colour(rng) * (1 - t[..., None]) + self._colour(rng) * t[..., None]
        if kind == "stripes":
            a = rng.uniform(0, np.pi)
            period = rng.uniform(4, 40)
            t = np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period)
            t = (t > rng.uniform(-0.5, 0.5)).astype(np.float32) if rng.random() < 0.5 else (t + 1) / 2
            return self._colour(rng) * (1 - t[..., None]) + self._colour(rng) * t[..., None]
        photo = self.photos[int(rng.integers(len(self.photos)))]
        scale = rng.uniform(0.3, 1.5)
        ph, pw = photo.shape[:2]
        ch, cw = min(ph, max(8, int(h / scale))), min(pw, max(8, int(w / scale)))
        y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        crop = cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:  # recolour so the same photo gives many textures
            crop = crop[..., rng.permutation(3)] * rng.uniform(0.6, 1.4, 3).astype(np.float32)
        return crop.clip(0, 1)

    # shapes -----------------------------------------------------------------------------
    def _shape(self, rng: np.random.Generator, h: int, w: int, centre=None, size=None) -> np.ndarray:
        mask = np.zeros((h, w), np.uint8)
        s = min(h, w)
        cx, cy = centre if centre is not None else (rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h)
        r = size if size is not None else s * rng.uniform(0.08, 0.4)
        kind = rng.choice(["ellipse", "polygon", "blob", "blob", "thin"], p=[0.25, 0.2, 0.3, 0.15, 0.1])
        if kind == "ellipse":
            axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.3, 1.0))))
            cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        elif kind in ("polygon", "blob"):
            n = int(rng.integers(3, 9)) if kind == "polygon" else 64
            theta = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == "polygon" else np.linspace(0, 2 * np.pi, n, False)
            if kind == "polygon":
                radii = r * rng.uniform(0.5, 1.0, n)
            else:
                radii = np.full(n, r, np.float64)
                for k in range(2, 6):
                    radii *= 1 + rng.uniform(0, 0.5 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
            pts = np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], 1)
            cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        else:  # a thin, gently curving structure (stick, cable, leg)
            n = int(rng.integers(3, 6))
            a = rng.uniform(0, 2 * np.pi)
            step = 2 * r / n
            pts = [(cx, cy)]
            for _ in range(n):
                a += rng.uniform(-0.6, 0.6)
                pts.append((pts[-1][0] + step * np.cos(a), pts[-1][1] + step * np.sin(a)))
            thick = int(rng.integers(2, max(3, int(s * 0.03))))
            cv2.polylines(mask, [np.round(np.array(pts)).astype(np.int32)], False, 1, thick)
        return mask.astype(bool)

    def _shading(self, rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(a) + yy * np.sin(a)) / max(h, w)
        return (1 + strength * (t - t.mean()))[..., None]

    # scenes -----------------------------------------------------------------------------
    def scene(self, index: int) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
        """(RGB uint8 image, visible masks, kinds) for scene `index`."""
        o = self.options
        rng = np.random.default_rng([self.seed, index])
        h, w = int(rng.integers(o.min_height, o.max_height + 1)), o.width
        if rng.random() < 0.3:
            h, w = w, h  # portrait
        image = self._texture(rng, h, w)
        owner = np.full((h, w), -1, np.int32)  # which region paints each pixel last
        regions: list[tuple[str, int]] = []  # (kind, parent region or -1)
        if rng.random() < 0.5:  # two background regions split by a smooth curve
            cols = np.arange(w, dtype=np.float32)
            curve = h * rng.uniform(0.3, 0.7) + h * 0.1 * np.sin(cols / w * rng.uniform(1, 6) + rng.uniform(0, 6))
            lower = np.arange(h, dtype=np.float32)[:, None] > curve[None, :]
            image[lower] = self._texture(rng, h, w)[lower]
            owner[~lower], owner[lower] = 0, 1
            regions += [("background", -1), ("background", -1)]
        for _ in range(int(rng.integers(o.min_objects, o.max_objects + 1))):
            shape = self._shape(rng, h, w)
            if shape.sum() < o.min_mask_area:
                continue
            tex = self._texture(rng, h, w) * self._shading(rng, h, w, rng.uniform(0, 0.8))
            image[shape] = tex[shape]
            obj = len(regions)
            owner[shape] = obj
            regions.append(("object", -1))
            if rng.random() < o.part_probability:
                ys, xs = np.nonzero(shape)
                size = np.sqrt(shape.sum() / np.pi)
                for _ in range(int(rng.integers(1, 3))):
                    k = int(rng.integers(len(xs)))
                    part = self._shape(rng, h, w, (xs[k], ys[k]), size * rng.uniform(0.25, 0.6))
                    if rng.random() < 0.6:
                        part &= shape  # a marking inside the object; otherwise an attached limb
                    if part.sum() < o.min_mask_area:
                        continue
                    ptex = self._texture(rng, h, w) * self._shading(rng, h, w, rng.uniform(0, 0.6))
                    image[part] = ptex[part]
                    owner[part] = len(regions)
                    regions.append(("part", obj))
        image *= self._shading(rng, h, w, rng.uniform(0, 0.6))
        sigma = rng.uniform(0, 1.2)
        if sigma > 0.3:
            image = cv2.GaussianBlur(image, (0, 0), sigma)
        image = image + rng.normal(0, rng.uniform(0, 0.03), image.shape).astype(np.float32)
        rgb = (image.clip(0, 1) * 255 + 0.5).astype(np.uint8)

        masks, kinds = [], []
        for i, (kind, _parent) in enumerate(regions):
            if kind == "part":
                continue
            visible = owner == i
            children = [j for j, (k, p) in enumerate(regions) if p == i]
            for j in children:
                part = owner == j
                if part.sum() >= o.min_mask_area:
                    masks.append(part)
                    kinds.append("part")
                visible |= part
            if visible.sum() >= o.min_mask_area:
                masks.append(visible)
                kinds.append(kind)
        return rgb, masks, kinds

    def jpeg_quality(self, index: int) -> int:
        return int(np.random.default_rng([self.seed, index, 1]).integers(40, 96))


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_shard(out_dir: str | Path, count: int, seed: int = 0, start: int = 0, options=None) -> Iterator[Path]:
    """Write scenes start..start+count-1 as SA-1B pairs (sa_<seed>_<index>.jpg/.json); yields
    each image path. Scenes already written are kept (the run can be resumed)."""
    from ..io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = SceneGenerator(seed, options)
    for index in range(start, start + count):
        stem = f"sa_{seed}_{index:06d}"
        jpg, js = out / f"{stem}.jpg", out / f"{stem}.json"
        if jpg.is_file() and js.is_file():
            yield jpg
            continue
        rgb, masks, kinds = gen.scene(index)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=gen.jpeg_quality(index))
        h, w = rgb.shape[:2]
        anns = []
        for i, (m, kind) in enumerate(zip(masks, kinds)):
            box = M.box_xyxy_to_xywh(M.mask_to_box(m))
            anns.append({"id": i, "segmentation": _rle(m), "bbox": [float(v) for v in box],
                         "area": int(m.sum()), "kind": kind})
        doc = {"image": {"image_id": index, "file_name": jpg.name, "width": w, "height": h,
                         "source": f"promptseg synth seed={seed}"}, "annotations": anns}
        with atomic_path(jpg) as tmp:
            tmp.write_bytes(buf.getvalue())
        with atomic_path(js) as tmp:
            tmp.write_text(json.dumps(doc))
        yield jpg
