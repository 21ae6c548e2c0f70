"""Everything mode: parity with the reference automatic mask generator on the same random
weights and a real photo, output modes, and options."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_records_match
from promptseg import masks as M
from promptseg.everything import MaskGenerator

GRID = 8  # a reduced grid keeps the reference's run short; the full 32x32 runs in the benchmark


@pytest.fixture(scope="module")
def generators(small_pair):
    from segment_anything import SamAutomaticMaskGenerator

    def make(**kwargs):
        kwargs = {"points_per_side": GRID, "output_mode": "uncompressed_rle", **kwargs}
        return SamAutomaticMaskGenerator(small_pair[0], **kwargs), MaskGenerator(small_pair[1], **kwargs)

    return make


@pytest.fixture(scope="module")
def unfiltered(generators, photo):
    """Thresholds at 0 and NMS off: every candidate mask survives."""
    ref, ours = generators(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    return ref.generate(photo), ours.generate(photo)


def test_every_mask_survives_and_matches(unfiltered):
    ref, ours = unfiltered
    assert len(ref) == 3 * GRID * GRID  # nothing was filtered: the whole pipeline ran on all
    assert_records_match(ref, ours)


def test_filters_at_median_thresholds_match(generators, photo, unfiltered):
    """Thresholds at the median predicted IoU and stability of the unfiltered run, so the
    filters keep some masks and drop others, then the default box NMS."""
    ref_all = unfiltered[0]
    iou_t = float(np.median([r["predicted_iou"] for r in ref_all]))
    stab_t = float(np.median([r["stability_score"] for r in ref_all]))
    ref, ours = generators(pred_iou_thresh=iou_t, stability_score_thresh=stab_t, box_nms_thresh=0.7)
    r, o = ref.generate(photo), ours.generate(photo)
    assert 0 < len(r) < len(ref_all)
    assert_records_match(r, o)


def test_default_thresholds_match(generators, photo):
    ref, ours = generators()
    assert_records_match(ref.generate(photo), ours.generate(photo))


def test_crops_and_small_region_removal_match(generators, photo):
    # a 4x4 grid: five crops of it cost the reference as much as the 8x8 grid on the image twice
    ref, ours = generators(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        crop_nms_thresh=1.0,
        crop_n_layers=1,
        min_mask_region_area=100,
    )
    r, o = ref.generate(photo), ours.generate(photo)
    # Random weights give masks that fill their crop, so the four crops' masks touch interior
    # crop edges and are dropped (as the reference does); the whole-image masks remain, now
    # cleaned of small holes and islands.
    assert len(r) >= 3 * 4 * 4
    assert {tuple(x["crop_box"]) for x in o} == {tuple(x["crop_box"]) for x in r}
    assert_records_match(r, o)


def test_output_modes_agree(small_pair, photo):
    kwargs = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    binary = MaskGenerator(small_pair[1], output_mode="binary_mask", **kwargs).generate(photo)
    raw = MaskGenerator(small_pair[1], output_mode="uncompressed_rle", **kwargs).generate(photo)
    coco = MaskGenerator(small_pair[1], output_mode="coco_rle", **kwargs).generate(photo)
    assert len(binary) == len(raw) == len(coco) == 48
    for b, r, c in zip(binary, raw, coco):
        assert b["segmentation"].dtype == bool and b["segmentation"].shape == (400, 600)
        assert np.array_equal(M.rle_to_mask(r["segmentation"]), b["segmentation"])
        assert isinstance(c["segmentation"]["counts"], str)
        assert np.array_equal(M.decode_coco_rle(c["segmentation"]), b["segmentation"])
        assert b["area"] == int(b["segmentation"].sum())
        x, y, w, h = b["bbox"]
        ys, xs = np.nonzero(b["segmentation"])
        if len(xs):
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_an_embedded_image_is_not_embedded_again(small_pair, photo):
    """A state from an earlier set_image (as the server holds) serves the whole-image layer;
    crop layers still embed their crops; a state of another image is refused."""
    from promptseg import Predictor

    model = small_pair[1]
    pred = Predictor(model)
    pred.set_image(photo)
    calls = []
    hook = model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        kwargs = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=1)
        fresh = MaskGenerator(model, **kwargs).generate(photo)
        assert len(calls) == 1 + 4  # the whole image, then four crops
        calls.clear()
        reused = MaskGenerator(model, **kwargs).generate(photo, image_state=pred.image_state)
        assert len(calls) == 4
    finally:
        hook.remove()
    assert len(reused) == len(fresh) > 0
    for a, b in zip(reused, fresh):
        assert np.array_equal(a["segmentation"], b["segmentation"]) and a["predicted_iou"] == b["predicted_iou"]
    assert pred.is_image_set  # the caller's predictor keeps its image
    with pytest.raises(ValueError, match="embedded from a"):
        MaskGenerator(model, points_per_side=4).generate(photo[:200], image_state=pred.image_state)


def test_bad_options(small_pair):
    with pytest.raises(ValueError, match="output_mode"):
        MaskGenerator(small_pair[1], output_mode="polygons")
    with pytest.raises(ValueError, match="exactly one"):
        MaskGenerator(small_pair[1], points_per_side=None)
    with pytest.raises(ValueError, match="one grid per crop layer"):
        MaskGenerator(small_pair[1], points_per_side=None, point_grids=[M.point_grid(4)], crop_n_layers=1)


def test_mask_helpers_match_reference():
    from segment_anything.utils import amg

    rng = np.random.default_rng(0)
    masks = rng.random((5, 37, 53)) > 0.7
    masks[1] = False
    masks[2, :, :] = True
    import torch

    t = torch.as_tensor(masks)
    ref_rles = amg.mask_to_rle_pytorch(t)
    for m, r in zip(masks, ref_rles):
        assert M.mask_to_rle(m) == r
        assert np.array_equal(M.rle_to_mask(r), m)
    logits = torch.randn(4, 30, 30) * 3
    want = amg.calculate_stability_score(logits, 0.0, 1.0)
    assert [M.stability_score_np(x, 0.0, 1.0) for x in logits.numpy()] == want.tolist()
    assert np.allclose(M.point_grid(5), amg.build_point_grid(5))
    for size in ((400, 600), (1000, 750), (333, 333)):
        assert M.crop_boxes(size, 2, 512 / 1500) == amg.generate_crop_boxes(size, 2, 512 / 1500)
    boxes = torch.tensor([[0, 0, 100, 100], [30, 30, 60, 60], [25, 10, 140, 90], [100, 100, 199, 199]])
    crop, image = [100, 100, 300, 300], [0, 0, 300, 300]
    want = amg.is_box_near_crop_edge(boxes, crop, image).tolist()
    assert [M.near_crop_edge(b, crop, image) for b in boxes.tolist()] == want
    for m in masks:
        assert M.mask_to_box(m) == amg.batched_mask_to_box(torch.as_tensor(m)[None])[0].tolist()
    for mode in ("holes", "islands"):
        got = M.remove_small_regions(masks[0], 5, mode)
        want = amg.remove_small_regions(masks[0], 5, mode)
        assert got[1] == want[1] and np.array_equal(got[0], want[0])
