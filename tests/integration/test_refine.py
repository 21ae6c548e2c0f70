"""GrabCut refinement of a model's answer: the function, its constraints and fallbacks, and the
`segment` and `eval` commands with --refine on real image files (zoom's own tests are in
test_zoom.py)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from helpers import run, scene_folder, segment_twice
from promptseg import sample_image_path
from promptseg.eval.protocols import iou
from promptseg.refine import grabcut_refine, refine_mask


@pytest.fixture(scope="module")
def scene():
    """A noisy photo-like image with one object (an ellipse over a gradient), its mask, and a
    coarse answer like a 64 x 64 model's: blocky, shifted, spilling over the boundary."""
    h, w = 200, 300
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([60 + 0.3 * xx, 90 + 0.2 * yy, 120 + 0 * xx], -1)
    gt = ((xx - 150) / 80) ** 2 + ((yy - 100) / 55) ** 2 <= 1
    img[gt] = (200, 70, 40)
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    coarse = cv2.resize(gt.astype(np.float32), (16, 12), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST)
    coarse = np.roll(coarse, (6, 8), (0, 1))
    logits = (coarse - 0.4) * 10.0  # confident (|logit| > 4) only where the blocks are nearly full or empty
    return img, gt, logits


def test_refinement_snaps_a_coarse_answer_to_the_object(scene):
    img, gt, logits = scene
    before = iou(logits > 0, gt)
    assert before < 0.85
    box = np.array([70, 45, 230, 155])
    with_box = grabcut_refine(img, logits, box=box)
    assert iou(with_box, gt) > 0.94
    assert not with_box[:, :69].any() and not with_box[:, 232:].any()  # outside the box stays background
    with_click = grabcut_refine(img, logits, np.array([[150, 100]]), np.array([1]))
    assert iou(with_click, gt) > 0.94
    assert np.array_equal(grabcut_refine(img, logits, box=box), with_box)  # same input, same answer
    assert np.array_equal(refine_mask("grabcut", img, logits, box=box), with_box)
    import promptseg

    assert promptseg.refine_mask is refine_mask


def test_clicks_are_hard_constraints_and_a_bool_answer_is_a_first_guess(scene):
    img, gt, logits = scene
    points, labels = np.array([[150, 100], [200, 100]]), np.array([1, 0])
    out = grabcut_refine(img, logits, points, labels, click_radius=6)
    assert out[100, 150] and not out[100, 200] and not out[100, 195:206].any()
    guess = grabcut_refine(img, gt, box=np.array([70, 45, 230, 155]))  # bool: nothing is confident
    assert iou(guess, gt) > 0.95


def test_fallbacks_and_errors(scene):
    img, gt, logits = scene
    empty = np.full(gt.shape, -10.0, np.float32)
    from_box = grabcut_refine(img, empty, box=np.array([65, 40, 235, 160]))  # no answer: GrabCut from the box
    assert iou(from_box, gt) > 0.9
    assert not grabcut_refine(img, empty).any()  # no answer and no prompt: nothing to refine
    with pytest.raises(ValueError, match="full-size answer of shape"):
        grabcut_refine(img, logits[:64, :64])
    with pytest.raises(ValueError, match="NaN"):
        grabcut_refine(img, np.full(gt.shape, np.nan))
    with pytest.raises(ValueError, match="outside the 300x200 image"):
        grabcut_refine(img, logits, np.array([[400, 10]]), np.array([1]))
    with pytest.raises(ValueError, match="one answer at a time"):
        grabcut_refine(img, logits, box=np.array([[0, 0, 50, 50], [10, 10, 60, 60]]))
    with pytest.raises(ValueError, match="unknown refinement 'crf'"):
        refine_mask("crf", img, logits)


def test_segment_cli_refines_the_mask_of_a_real_photo(tmp_path):
    photo = sample_image_path("coffee.png")
    box = "150,20,470,330"
    a, b = segment_twice(tmp_path, photo, box, "grabcut", "--overlay", tmp_path / "overlay.png")
    assert not b[:, :149].any() and not b[:, 472:].any() and not b[332:].any()
    assert not np.array_equal(a, b) and iou(a, b) > 0.5  # reshaped, but the same object
    bad = run("segment", photo, "--box", box, "--refine", "crf", "-o", tmp_path / "x.png")
    assert bad.returncode == 1 and "--refine 'crf'" in bad.stderr and "Traceback" not in bad.stderr


def test_eval_cli_scores_the_refined_model_beside_the_model_alone(tmp_path):
    data = scene_folder(tmp_path / "bench", n=6)
    out = run("eval", data, "--refine", "grabcut", "--protocols", "box,click", "--baselines", "grabcut,grabcut-clicks",
              "-o", tmp_path / "r.json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["refine"] == "grabcut"
    plain, refined = report["overall"]["promptseg tiny"], report["overall"]["promptseg tiny + grabcut"]
    assert refined["instances"] == plain["instances"] == 6
    assert refined["box"] > plain["box"] + 0.03  # sharper boundaries on these scenes
    assert refined["click1_oracle"] == refined["click1"]  # the refined top answer only
    assert "promptseg tiny + grabcut" in out.stdout
    clicks_only = report["overall"]["grabcut_clicks"]  # the ablation: GrabCut from the clicks, no model
    assert clicks_only["instances"] == 6 and 0 <= clicks_only["click1"] <= 1 and "box" not in clicks_only
