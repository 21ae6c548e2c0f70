"""Shared helpers for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[1]  # the repository's root

# Prompts on coffee.png (600x400) that the parity tests ask of both sides.
PROMPTS = {
    "one point": dict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1])),
    "points with negatives": dict(
        point_coords=np.array([[300.0, 200.0], [120.0, 80.0], [450.0, 330.0], [520.0, 60.0]]),
        point_labels=np.array([1, 0, 1, 0]),
    ),
    "box": dict(box=np.array([150.0, 60.0, 470.0, 380.0])),
    "box and points": dict(
        box=np.array([150.0, 60.0, 470.0, 380.0]),
        point_coords=np.array([[300.0, 200.0], [200.0, 100.0]]),
        point_labels=np.array([1, 0]),
    ),
}
BATCHED_BOXES = dict(box=np.array([[150.0, 60.0, 470.0, 380.0], [20.0, 30.0, 200.0, 250.0]]))



def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and saved buffer random values of a sensible scale.

    The reference initialises position embeddings and relative-position tables to zeros,
    which would hide errors there, so nothing is left at its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):  # batch norm's variance: positive
                t.copy_(1.0 + 0.3 * noise.abs())
            elif name.endswith(".weight") and t.dim() == 1:  # norm scales
                t.copy_(1.0 + 0.1 * noise)
            elif t.dim() == 1:  # biases
                t.copy_(0.05 * noise)
            elif "rel_pos" in name or "pos_embed" in name:
                t.copy_(0.3 * noise)
            elif t.dim() >= 2 and "embed" not in name and "gaussian" not in name:
                fan_in = t[0].numel() if "output_upscaling" not in name else t.shape[0]
                t.copy_(noise / fan_in**0.5)
            else:
                t.copy_(noise)
    return module


def assert_close_scaled(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-4,
                        scale: float | None = None) -> None:
    """allclose with the absolute tolerance scaled to the reference's magnitude (or `scale`)."""
    ours, ref = torch.as_tensor(ours).float(), torch.as_tensor(ref).float()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max().clamp_min(1e-12) if scale is None else torch.tensor(scale)
    err = (ours - ref).abs()
    bound = atol * scale + rtol * ref.abs()
    assert (err <= bound).all(), f"max abs error {err.max():.3g} (reference magnitude {scale:.3g})"


def agreement(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a == b).float().mean().item()


def run(*args, env=None, timeout=300):
    """`promptseg ARGS` as a user runs it, in a subprocess; the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "promptseg.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def scene_folder(root, n=3):
    """A benchmark-style folder (images/ + masks/) from synthetic scenes: the largest object."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    from promptseg.train.synth import SceneGenerator

    gen = SceneGenerator(77)
    for i in range(n):
        img, masks, kinds = gen.scene(i)
        objs = [m for m, k in zip(masks, kinds) if k == "object"]
        m = max(objs, key=lambda a: a.sum())
        Image.fromarray(img).save(root / "images" / f"s{i}.jpg", quality=95)
        out = np.where(m, 255, 0).astype(np.uint8)
        if i == 0:  # a GrabCut-style ignored band around the object
            import cv2

            band = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) & ~m
            out[band.astype(bool)] = 128
        Image.fromarray(out).save(root / "masks" / f"s{i}.png")
    return root


def segment_twice(tmp_path, photo, box: str, refine: str, *extra):
    """`segment` with the box, unrefined and with --refine (its summary checked): both masks."""
    import json

    plain = run("segment", photo, "--box", box, "--refine", "none", "-o", tmp_path / "plain.png", "--json")
    refined = run("segment", photo, "--box", box, "--refine", refine, "-o", tmp_path / "refined.png", *extra, "--json")
    assert plain.returncode == 0 and refined.returncode == 0, refined.stderr
    summary = json.loads(refined.stdout)
    assert summary["refine"] == refine and summary["seconds"]["refine"] > 0
    a = np.asarray(Image.open(tmp_path / "plain.png")) > 0
    b = np.asarray(Image.open(tmp_path / "refined.png")) > 0
    assert b.sum() == summary["masks"][0]["area"] > 0
    return a, b


def _rles(records):
    return [mask_utils.frPyObjects(r["segmentation"], *r["segmentation"]["size"]) for r in records]


def match_records(ref_records, our_records):
    """One-to-one matching: each reference mask to the unused mask of ours from the same
    prompt point (and crop) with the highest mask IoU. Returns (ref index, our index, IoU)."""
    if not ref_records or not our_records:
        return []
    ious = np.asarray(mask_utils.iou(_rles(our_records), _rles(ref_records), [0] * len(ref_records)))
    ious = ious.reshape(len(our_records), len(ref_records))

    def key(r):
        return tuple(np.round(r["point_coords"][0], 3)) + tuple(np.round(r["crop_box"], 3))

    ours_by_key: dict = {}
    for i, r in enumerate(our_records):
        ours_by_key.setdefault(key(r), []).append(i)
    pairs, used = [], set()
    for j, r in enumerate(ref_records):
        candidates = [i for i in ours_by_key.get(key(r), []) if i not in used]
        if candidates:
            i = max(candidates, key=lambda i: ious[i, j])
            used.add(i)
            pairs.append((j, i, float(ious[i, j])))
    return pairs


def assert_records_match(ref_records, our_records, stability_thresh: float | None = None):
    """Generator records as the reference's: counts within 1 %, >= 99 % of masks matched one to
    one at IoU >= 0.99, and their scores, point, crop, box and area agreeing.

    With `stability_thresh` (the filter's), masks whose stability lies within 1e-3 of it are left
    out on both sides first: one pixel more or less at full size moves a stability score by
    about that much, so such a mask may fall either way."""
    if stability_thresh is not None:
        def clear(r):
            return abs(r["stability_score"] - stability_thresh) > 1e-3

        ref_records = [r for r in ref_records if clear(r)]
        our_records = [r for r in our_records if clear(r)]
    n_ref, n_ours = len(ref_records), len(our_records)
    assert abs(n_ref - n_ours) <= max(1, 0.01 * n_ref), (n_ref, n_ours)
    pairs = match_records(ref_records, our_records)
    good = [p for p in pairs if p[2] >= 0.99]
    assert len(good) >= 0.99 * n_ref, f"{len(good)} of {n_ref} masks matched at IoU >= 0.99"
    for j, i, _ in good:
        r, o = ref_records[j], our_records[i]
        assert o["predicted_iou"] == pytest.approx(r["predicted_iou"], abs=1e-4)
        assert o["stability_score"] == pytest.approx(r["stability_score"], abs=1e-3)
        assert o["point_coords"][0] == pytest.approx(r["point_coords"][0])
        assert o["crop_box"] == pytest.approx(r["crop_box"])
        assert np.abs(np.array(o["bbox"]) - np.array(r["bbox"])).max() <= 1
        assert abs(o["area"] - r["area"]) <= max(2, 0.005 * r["area"])


def _outline(mask: np.ndarray) -> np.ndarray:
    """A mask's outline, one pixel wide (thinned as human boundaries in BSDS are)."""
    import cv2
    from skimage.morphology import thin

    return thin(mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))


def _outline_all(masks) -> np.ndarray:
    from skimage.morphology import thin

    return thin(np.any([_outline(m) for m in masks], axis=0))


def boundary_folder(root, n=2, mat=False):
    """Synthetic scenes as a BSDS-style boundary dataset: annotator 0 outlines every object,
    annotator 1 only the largest (annotators disagree, as people do)."""
    from promptseg.train.synth import SceneGenerator

    (root / "images").mkdir(parents=True)
    gen = SceneGenerator(5)
    for i in range(n):
        img, masks, kinds = gen.scene(i)
        objs = [m for m, k in zip(masks, kinds) if k == "object"]
        every = _outline_all(objs)
        largest = _outline(max(objs, key=lambda a: a.sum()))
        Image.fromarray(img).save(root / "images" / f"{100 + i}.jpg", quality=95)
        if mat:
            from scipy.io import savemat

            (root / "groundTruth").mkdir(exist_ok=True)
            cells = np.empty(2, dtype=object)
            cells[0] = {"Boundaries": every.astype(np.uint8), "Segmentation": np.ones(every.shape, np.uint16)}
            cells[1] = {"Boundaries": largest.astype(np.uint8), "Segmentation": np.ones(every.shape, np.uint16)}
            savemat(root / "groundTruth" / f"{100 + i}.mat", {"groundTruth": cells})
        else:
            (root / "boundaries_per_annotator").mkdir(exist_ok=True)
            for k, b in enumerate((every, largest)):
                Image.fromarray(np.where(b, 255, 0).astype(np.uint8)).save(
                    root / "boundaries_per_annotator" / f"{100 + i}_{k}.png")
    return root


def _scenes(n):
    from promptseg.train.synth import SceneGenerator

    gen = SceneGenerator(11)
    for i in range(n):
        img, masks, kinds = gen.scene(i)
        yield i, img, [m for m, k in zip(masks, kinds) if k == "object" and m.sum() > 200][:3]


def object_folder(root, n=2):
    """images/ + masks/ with one object per stem, each photo repeated under its objects' stems."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, img, objs in _scenes(n):
        data = None
        for k, m in enumerate(objs):
            Image.fromarray(img).save(root / "images" / f"s{i}_{k}.jpg", quality=95)
            if data is None:
                data = (root / "images" / f"s{i}_{k}.jpg").read_bytes()
            (root / "images" / f"s{i}_{k}.jpg").write_bytes(data)  # byte-identical copies, as in COCO MVal
            Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(root / "masks" / f"s{i}_{k}.png")
    return root


def coco_file(root, n=2):
    """A COCO instances file over scene photos in `images/` beside it, two categories."""
    import json

    from promptseg.eval.objects import encode_mask
    (root / "images").mkdir(parents=True)
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "disc"}, {"id": 7, "name": "blob"}]}
    for i, img, objs in _scenes(n):
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        doc["images"].append({"id": 100 + i, "file_name": f"{i}.png", "height": img.shape[0], "width": img.shape[1]})
        for k, m in enumerate(objs):
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": 100 + i, "iscrowd": 0,
                                       "category_id": 1 if k % 2 == 0 else 7, "segmentation": encode_mask(m),
                                       "area": float(m.sum()), "bbox": [0, 0, 1, 1]})
    (root / "instances.json").write_text(json.dumps(doc))
    return root / "instances.json", doc
