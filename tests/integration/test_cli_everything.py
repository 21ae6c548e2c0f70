"""`promptseg everything` on real files: formats, resume, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from helpers import run
from promptseg import MaskGenerator, sample_image_path
from promptseg.masks import decode_coco_rle

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1"]


def test_sa1b_output_resume_and_bad_file(tmp_path, vit_b_checkpoint, vit_b_pair):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sample_image_path("coffee.png"), images / "coffee.png")
    shutil.copy(sample_image_path("chelsea.png"), images / "chelsea.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    res = run("everything", images, "-o", out, "-c", vit_b_checkpoint, *FAST)
    assert res.returncode == 1, res.stderr
    assert "3 images: 2 segmented" in res.stderr and "1 failed" in res.stderr
    assert "failed: " in res.stderr and "broken.jpg" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "chelsea.json",
        "chelsea_overlay.png",
        "coffee.json",
        "coffee_overlay.png",
    ]
    doc = json.loads((out / "coffee.json").read_text())
    assert doc["image"]["width"] == 600 and doc["image"]["height"] == 400
    anns = doc["annotations"]
    assert len(anns) == 48
    for key in ("segmentation", "bbox", "area", "predicted_iou", "stability_score", "point_coords", "crop_box"):
        assert key in anns[0]
    # the file holds what the Python API finds with the same options
    api = MaskGenerator(
        vit_b_pair[1], points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0
    ).generate(sample_image_path("coffee.png"))
    assert len(api) == len(anns)
    for a, r in zip(anns, api):
        decoded = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        assert (decoded.astype(bool) == r["segmentation"]).mean() > 0.9999
        assert a["area"] == r["area"] and a["bbox"] == r["bbox"]
    # a re-run skips what is done and still reports the broken file
    stamp = (out / "coffee.json").stat().st_mtime_ns
    again = run("everything", images, "-o", out, "-c", vit_b_checkpoint, *FAST)
    assert again.returncode == 1
    assert "0 segmented" in again.stderr and "2 already done" in again.stderr
    assert (out / "coffee.json").stat().st_mtime_ns == stamp


def test_coco_and_png_formats(tmp_path, vit_b_checkpoint):
    image = sample_image_path("coffee.png")
    coco_out, png_out = tmp_path / "coco", tmp_path / "png"
    res = run("everything", image, "-o", coco_out, "-c", vit_b_checkpoint, "--format", "coco", "--no-overlay", *FAST)
    assert res.returncode == 0, res.stderr
    coco = COCO(str(coco_out / "annotations.json"))
    assert len(coco.getImgIds()) == 1 and len(coco.getAnnIds()) == 48
    masks_from_coco = [coco.annToMask(a).astype(bool) for a in coco.loadAnns(coco.getAnnIds())]
    assert all(m.shape == (400, 600) for m in masks_from_coco)
    assert not list(coco_out.glob("*_overlay.png"))

    res = run("everything", image, "-o", png_out, "-c", vit_b_checkpoint, "--format", "png", *FAST)
    assert res.returncode == 0, res.stderr
    pngs = sorted((png_out / "coffee").glob("mask_*.png"))
    assert len(pngs) == 48 and (png_out / "coffee" / "overlay.png").exists()
    from PIL import Image

    listed = json.loads((png_out / "coffee" / "masks.json").read_text())["annotations"]
    for path, ann, from_coco in zip(pngs, listed, masks_from_coco):
        png = np.asarray(Image.open(path)) > 0
        assert np.array_equal(png, decode_coco_rle(ann["segmentation"]))
        assert np.array_equal(png, from_coco)


def test_everything_errors(tmp_path):
    res = run("everything", tmp_path / "nothing-here", "-o", tmp_path / "o", "--model", "vit_b")
    assert res.returncode != 0 and res.stderr.startswith("error: no image files found")
    res = run("everything", sample_image_path(), "-o", tmp_path / "o", "--format", "tiff", "--model", "vit_b")
    assert res.returncode != 0 and "--format must be" in res.stderr
