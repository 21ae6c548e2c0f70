"""The zero-shot object tasks end to end on real image files: `promptseg eval --task proposals`
and `--task instances` (annotated boxes, and a detector's boxes in COCO results format), on a
COCO-MVal-style folder and on a COCO instances file."""

from __future__ import annotations

import json

import pytest

from helpers import coco_file, object_folder, run
from promptseg.eval.objects import load_object_dataset


def test_object_datasets_group_a_photos_objects(tmp_path):
    name, images, cats = load_object_dataset(object_folder(tmp_path / "mval"))
    assert name == "mval" and len(images) == 2 and cats == {1: "object"}
    assert all(len(i.objects) >= 2 for i in images)  # the repeated photo is one photo
    path, doc = coco_file(tmp_path / "coco")
    name, images, cats = load_object_dataset(path)
    assert cats == {1: "disc", 7: "blob"} and [i.key for i in images] == ["100", "101"]
    assert sum(len(i.objects) for i in images) == len(doc["annotations"])
    assert {o["category_id"] for i in images for o in i.objects} == {1, 7}
    with pytest.raises(ValueError, match="not an object dataset"):
        load_object_dataset(tmp_path / "coco" / "images")


def test_eval_proposals_cli(tmp_path):
    data = object_folder(tmp_path / "mval", n=3)
    (data / "images" / "s1_0.jpg").write_bytes(b"not an image")  # its own photo now: skipped and reported
    out = run("eval", "--task", "proposals", data, "--points-per-side", "8", "-o", tmp_path / "r.json", "--quiet")
    assert out.returncode == 1 and "skipped" in out.stderr and "s1_0.jpg" in out.stderr, out.stderr
    assert "AR@1000" in out.stdout and "SAM ViT-H, LVIS (quoted)" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 3 and report["points_per_side"] == 8 and len(report["errors"]) == 1
    s = report["scores"]
    assert 0 < s["AR@1000"] <= 1 and s["AR@10"] <= s["AR@100"] <= s["AR@1000"]


def test_eval_instances_cli_with_oracle_and_detector_boxes(tmp_path):
    path, doc = coco_file(tmp_path / "coco")
    out = run("eval", "--task", "instances", path, "-o", tmp_path / "oracle.json", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "oracle (annotated boxes)" in out.stdout and "(quoted)" in out.stdout
    oracle = json.loads((tmp_path / "oracle.json").read_text())
    assert oracle["images"] == 2 and oracle["objects"] == len(doc["annotations"]) and oracle["scores"]["AP50"] > 0.3
    # a detector's boxes: the true ones for image 100, nothing for 101, and a box in the wrong
    # place: AP falls below the oracle's
    from pycocotools import mask as mask_utils

    dets = []
    for a in doc["annotations"]:
        if a["image_id"] == 100:
            box = mask_utils.toBbox(a["segmentation"]).tolist()
            dets.append({"image_id": 100, "category_id": a["category_id"], "bbox": box, "score": 0.9})
    dets.append({"image_id": 100, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.95})
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = run("eval", "--task", "instances", path, "--boxes", tmp_path / "dets.json", "-o", tmp_path / "d.json",
              "--quiet")
    assert out.returncode == 0, out.stderr
    detected = json.loads((tmp_path / "d.json").read_text())
    assert detected["boxes"] == "detections" and detected["scores"]["AP"] < oracle["scores"]["AP"]


def test_eval_object_task_errors(tmp_path):
    path, _ = coco_file(tmp_path / "coco", n=1)
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 100, "bbox": [0, 0, -1, 5], "score": 1}]))
    out = run("eval", "--task", "instances", path, "--boxes", tmp_path / "bad.json")
    assert out.returncode == 1 and "empty or non-finite box" in out.stderr and "Traceback" not in out.stderr
    out = run("eval", "--task", "proposals", path, "--boxes", tmp_path / "bad.json")
    assert out.returncode == 1 and "--boxes is for --task instances" in out.stderr
    (tmp_path / "broken.json").write_text("{")
    out = run("eval", "--task", "instances", tmp_path / "broken.json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
