"""Writes tests/data/coins: scikit-image's coins photo (Greek coins from Pompeii, Brooklyn Museum,
no known copyright restrictions) with one mask per coin, as a COCO instances file and as a
BSDS-style boundary map, for the zero-shot tasks' end-to-end tests.

How the masks were made: watershed on the photo's Sobel magnitude from markers (grey < 30:
background, > 150: coin), holes filled, specks under 100 px dropped, then each coin's convex hull
(coins are convex; the hull closes notches where a coin's rim is dark). Every outline was checked
by eye on an overlay. Run from the repository root: `python experiments/annotate_coins.py`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import data, filters, morphology, segmentation

from promptseg.eval.objects import encode_mask

OUT = Path("tests/data/coins")


def coin_masks() -> list[np.ndarray]:
    photo = data.coins()
    markers = np.zeros_like(photo)
    markers[photo < 30] = 1
    markers[photo > 150] = 2
    coins = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(photo), markers) == 2)
    labels, n = ndi.label(coins)
    masks = []
    for k in range(1, n + 1):
        m = labels == k
        if m.sum() >= 100:
            masks.append(morphology.convex_hull_image(m))
    # reading order: rows of coins top to bottom, then left to right
    centres = [ndi.center_of_mass(m) for m in masks]
    order = sorted(range(len(masks)), key=lambda i: (round(centres[i][0] / 75), centres[i][1]))
    return [masks[i] for i in order]


def main() -> None:
    photo = data.coins()
    masks = coin_masks()
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    (OUT / "boundaries_per_annotator").mkdir(exist_ok=True)
    shutil.copy(Path(data.__file__).parent / "coins.png", OUT / "images" / "coins.png")
    h, w = photo.shape
    doc = {"images": [{"id": 1, "file_name": "coins.png", "height": h, "width": w}],
           "categories": [{"id": 1, "name": "coin"}], "annotations": []}
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        doc["annotations"].append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                   "segmentation": encode_mask(m), "area": int(m.sum()), "bbox": box})
    (OUT / "instances.json").write_text(json.dumps(doc))
    outline = np.zeros((h, w), bool)
    for m in masks:
        outline |= m & ~ndi.binary_erosion(m)
    Image.fromarray(np.where(outline, 255, 0).astype(np.uint8)).save(OUT / "boundaries_per_annotator" / "coins_0.png")
    overlay = np.dstack([photo] * 3)
    overlay[outline] = (255, 0, 0)
    Image.fromarray(overlay).save("/tmp/coins_overlay.png")
    print(f"{len(masks)} coins, areas {min(m.sum() for m in masks)}-{max(m.sum() for m in masks)} px")


if __name__ == "__main__":
    main()
