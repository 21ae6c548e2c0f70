"""Zoom refinement (the model looks again at a crop around its answer): the crop's geometry, the
mask input it carries, that it restores the predictor's image, that it helps small objects in real
image files, and the `segment` command and server with --refine zoom."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import segment_twice
from promptseg import Predictor, default_model, read_image, sample_image_path
from promptseg.eval.datasets import load_dataset
from promptseg.eval.protocols import farthest_interior_point, iou, tight_box
from promptseg.refine import REFINERS, answer_masks, logits_to_mask_input, refine_mask, zoom_refine, zoom_window
from promptseg.transforms import upscale_logits


@pytest.fixture(scope="module")
def predictor():
    return Predictor(default_model())


@pytest.fixture(scope="module")
def small_objects(tmp_path_factory):
    """Objects under 3 % of their scene, from synthetic scenes written as SA-1B files (JPEG + JSON)
    by the scene generator, with seeds the bundled model was not trained on."""
    from promptseg.train.synth import write_shard

    folder = tmp_path_factory.mktemp("scenes")
    list(write_shard(folder, 12, seed=4242))
    ((_, instances),) = load_dataset(folder, per_image=8)
    small = [i for i in instances if i.gt.mean() < 0.03]
    assert len(small) >= 15
    return small


def test_zoom_window_frames_the_extent_inside_the_image():
    size = (300, 400)
    x0, y0, x1, y1 = zoom_window(size, np.array([100, 120, 139, 149]), 256)  # 40 x 30 extent
    assert x1 - x0 == y1 - y0 == round(0.4 * 256)  # at least min_side x img_size: enlarged at most 2.5x
    assert x0 <= 100 and y0 <= 120 and x1 > 139 and y1 > 149
    x0, y0, x1, y1 = zoom_window(size, np.array([100, 100, 179, 199]), 256)  # 80 x 100: context 1.5
    assert x1 - x0 == y1 - y0 == 150 and (x0 + x1) / 2 == pytest.approx(139.5, abs=1) and (y0 + y1) / 2 == pytest.approx(149.5, abs=1)
    x0, y0, x1, y1 = zoom_window(size, np.array([380, 280, 399, 299]), 256)  # at a corner: shifted inside
    assert (x1, y1) == (400, 300) and x1 - x0 == y1 - y0 == 102
    assert zoom_window(size, np.array([10, 10, 250, 200]), 256) is None  # most of the image: no closer view


def test_logits_to_mask_input_is_the_low_res_frame_of_the_answer():
    logits = np.full((200, 300), -8.0, np.float32)
    logits[40:120, 90:210] = 8.0
    low = logits_to_mask_input(logits, 256, (64, 64))
    assert low.shape == (1, 64, 64)
    assert (low[0, 43:, :] < 0).all()  # the padded rows below a 300 x 200 image (171 of 256 px)
    back = upscale_logits(low[None], (171, 256), (200, 300), 256, return_logits=True)[0, 0]
    assert iou(back > 0, logits > 0) > 0.95


def test_mask_input_in_sam2s_square_frame(sam2_t_checkpoint, monkeypatch):
    """SAM 2 stretches an image to its square input: the mask input of an answer is stretched
    too (no padding), so it lands where a SAM 2 predictor's own low-res logits of it would; and
    zoom refinement on a SAM 2 predictor uses that frame (a crop cut short by the image's border
    is not square)."""
    from PIL import Image

    from promptseg import build_model, refine
    from promptseg.predict import FlipPredictor
    from promptseg.transforms import original_frame_logits

    logits = np.full((200, 300), -8.0, np.float32)
    logits[40:120, 90:210] = 8.0
    low = logits_to_mask_input(logits, 1024, (256, 256), square=True)
    assert low.shape == (1, 256, 256) and (low[0, -10:] < 0).all() and (low[0, 60:150, 80:170] > 0).all()
    back = original_frame_logits(low[None], (200, 300), return_logits=True)[0, 0]
    assert iou(back > 0, logits > 0) > 0.95
    predictor = Predictor(build_model(checkpoint=sam2_t_checkpoint[1]))
    assert predictor.square_input and FlipPredictor(predictor).square_input
    image = np.asarray(Image.open(sample_image_path("coffee.png")).convert("RGB").resize((1500, 300)))
    predictor.set_image(image)
    clicks, labels = np.array([[750.0, 150.0], [700.0, 100.0]]), np.array([1, 0])
    box = np.array([680.0, 90.0, 820.0, 210.0])
    answer = predictor.predict(clicks, labels, box, multimask_output=False, return_logits=True)[0][0]
    frames = []
    spy = refine.logits_to_mask_input
    monkeypatch.setattr(refine, "logits_to_mask_input", lambda *a, **k: frames.append((a[0].shape, k)) or spy(*a, **k))
    zoomed = zoom_refine(predictor, image, answer, clicks, labels, box)
    assert zoomed.shape == answer.shape and np.isfinite(zoomed).all()
    assert frames == [((300, 410), {"square": True})]  # a 410 x 300 crop, stretched as SAM 2 stretches it


def test_zoom_sharpens_small_objects_and_restores_the_image(predictor, small_objects):
    before, after_box, plain_click, zoom_click = [], [], [], []
    for inst in small_objects:
        image = read_image(inst.image_path)
        predictor.set_image(image)
        box = tight_box(inst.gt)
        logits, scores, low = predictor.predict(box=box, multimask_output=False, return_logits=True)
        zoomed = zoom_refine(predictor, inst.image_path, logits[0], box=box)
        assert zoomed.shape == inst.gt.shape and zoomed.dtype == np.float32
        again, scores2, low2 = predictor.predict(box=box, multimask_output=False, return_logits=True)
        assert np.array_equal(again, logits) and np.array_equal(low2, low)  # the embedded image is back
        before.append(iou(logits[0] > 0, inst.gt))
        after_box.append(iou(zoomed > 0, inst.gt))
        point = np.array([farthest_interior_point(inst.gt)])
        logits, scores, _ = predictor.predict(point, np.array([1]), return_logits=True)
        top = logits[int(np.argmax(scores))]
        plain_click.append(iou(top > 0, inst.gt))
        zoom_click.append(iou(zoom_refine(predictor, image, top, point, np.array([1])) > 0, inst.gt))
    assert np.mean(after_box) > np.mean(before) + 0.03, (np.mean(before), np.mean(after_box))
    assert np.mean(zoom_click) > np.mean(plain_click) + 0.03, (np.mean(plain_click), np.mean(zoom_click))


def test_zoom_follows_the_prompts(predictor, small_objects):
    inst = small_objects[0]
    image = read_image(inst.image_path)
    predictor.set_image(image)
    h, w = inst.gt.shape
    point = np.array([farthest_interior_point(inst.gt)])
    logits, scores, _ = predictor.predict(point, np.array([1]), return_logits=True)
    box = tight_box(inst.gt)
    zoomed = zoom_refine(predictor, image, logits[0], box=box)
    x0, y0, x1, y1 = zoom_window((h, w), box, 256)
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    assert not (zoomed[outside] > 0).any()  # outside the crop nothing is object
    # a second click far away (a background one outside the crop) is left out, not an error
    far = np.array([[0, 0]]) if point[0, 0] > w / 2 else np.array([[w - 1, h - 1]])
    clicks, labels = np.concatenate([point, far]), np.array([1, 0])
    two, _, _ = predictor.predict(clicks, labels, multimask_output=False, return_logits=True)
    assert zoom_refine(predictor, image, two[0], clicks, labels).shape == (h, w)
    # three candidates refined together each stay themselves
    masks = answer_masks(logits, 0.0, "zoom", image, point, np.array([1]), predictor=predictor)
    assert masks.shape == (3, h, w) and masks.dtype == bool
    assert len({m.tobytes() for m in masks}) > 1
    everything = np.full((h, w), 5.0, np.float32)  # an answer covering the image: nothing to look closer at
    assert np.array_equal(zoom_refine(predictor, image, everything, point, np.array([1])), everything)
    assert set(REFINERS) == {"grabcut", "zoom", "zoom+grabcut"}
    both = refine_mask("zoom+grabcut", image, logits[0], box=box, predictor=predictor)
    assert both.dtype == bool and both.any()
    with pytest.raises(ValueError, match="pass the predictor"):
        refine_mask("zoom", image, logits[0], box=box)
    with pytest.raises(ValueError, match="needs the prompts"):
        zoom_refine(predictor, image, logits[0])
    with pytest.raises(ValueError, match="keep must be"):
        zoom_refine(predictor, image, logits[0], box=box, keep="top")


def test_segment_cli_zooms_on_a_small_box_of_a_real_photo(tmp_path):
    a, b = segment_twice(tmp_path, sample_image_path("chelsea.png"), "200,60,280,140", "zoom")
    assert not np.array_equal(a, b) and iou(a, b) > 0.3  # looked at again, the same object
    x0, y0, x1, y1 = zoom_window((300, 451), np.array([200, 60, 280, 140]), 256)
    ys, xs = np.nonzero(b)
    assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1  # nothing outside the crop
