"""Mask average recall and mask AP of the zero-shot object tasks, on constructed cases whose
answers are known (the counting is pycocotools'; these check what we hand it)."""

from __future__ import annotations

import numpy as np
import pytest

from promptseg.eval.objects import ObjectImage, coco_evaluate, encode_mask, object_annotation

H, W = 120, 160


def _square(y, x, side=40, rows=None):
    m = np.zeros((H, W), bool)
    m[y : y + (rows or side), x : x + side] = True
    return m


def _photo(masks, categories=None):
    cats = categories or [1] * len(masks)
    return ObjectImage("p", None, H, W, [object_annotation(encode_mask(m), c) for m, c in zip(masks, cats)])


def _junk(n):
    return [{"segmentation": encode_mask(_square(0, 150, side=5)), "score": 0.99} for _ in range(n)]


def test_proposal_recall_counts_only_the_top_k():
    objects = [_square(10, 10), _square(60, 100)]
    photo = _photo(objects)
    found = [{"segmentation": encode_mask(m), "score": 0.5} for m in objects]
    perfect = coco_evaluate([photo], [{"image": 0, **r} for r in found], {1: "object"}, proposals=True)
    assert perfect["AR@10"] == pytest.approx(1) and perfect["AR@1000"] == pytest.approx(1)
    # ten better-scored junk proposals push both objects out of the top 10, not out of the top 100
    ranked = coco_evaluate([photo], [{"image": 0, **r} for r in _junk(10) + found], {1: "object"}, proposals=True)
    assert ranked["AR@10"] == 0 and ranked["AR@100"] == pytest.approx(1)
    assert ranked["AR_medium"] == pytest.approx(1) and ranked["AR_small"] is None  # 1600 px: medium


def test_recall_averages_over_iou_thresholds():
    gt = _square(10, 10, side=10)  # 100 px
    part = _square(10, 10, side=10, rows=6) | _square(16, 10, side=2, rows=1)  # 62 px inside it: IoU 0.62
    r = coco_evaluate([_photo([gt])], [{"image": 0, "segmentation": encode_mask(part), "score": 1.0}],
                      {1: "object"}, proposals=True)
    assert r["AR@1000"] == pytest.approx(0.3)  # matched at IoU 0.5, 0.55 and 0.6 of the ten


def test_instance_ap_of_perfect_wrong_class_and_missed_answers():
    objects = [_square(10, 10), _square(60, 100)]
    photo = _photo(objects, categories=[1, 2])
    cats = {1: "cup", 2: "plate"}
    right = [{"image": 0, "segmentation": encode_mask(m), "score": 0.9, "category_id": c} for m, c in zip(objects, [1, 2])]
    assert coco_evaluate([photo], right, cats, proposals=False)["AP"] == pytest.approx(1)
    swapped = [{**r, "category_id": 3 - r["category_id"]} for r in right]
    assert coco_evaluate([photo], swapped, cats, proposals=False)["AP"] == pytest.approx(0)
    # one class found, the other missed: AP is the mean over the two classes
    assert coco_evaluate([photo], right[:1], cats, proposals=False)["AP"] == pytest.approx(0.5)
    assert coco_evaluate([photo], [], cats, proposals=False)["AP"] == 0
