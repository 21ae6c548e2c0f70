"""Mirror-image averaging (FlipPredictor): the low-res frame's mirror, that the answer is the mean
of the two asked by hand, that it is mirror-symmetric, that it swaps embedded images whole, that it
helps on held-out synthetic scenes read from files, its errors, and the `segment` and `eval`
commands with --flip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import run, scene_folder
from promptseg import Predictor, default_model, read_image, sample_image_path
from promptseg.eval.datasets import load_dataset
from promptseg.eval.methods import SamMethod
from promptseg.eval.protocols import evaluate_instance
from promptseg.predict.flip import FlipPredictor, mirror_low_res
from promptseg.refine import zoom_refine
from promptseg.transforms import preprocess_shape


@pytest.fixture(scope="module")
def predictor():
    return Predictor(default_model())


@pytest.fixture(scope="module")
def photo():
    return read_image(sample_image_path("coffee.png"))


def test_mirror_low_res_is_the_mirror_in_the_padded_frame():
    rng = np.random.default_rng(0)
    low = rng.normal(size=(2, 1, 64, 64)).astype(np.float32)
    # a square or wide image spans the model's square from left to right: a plain left-right flip
    assert np.array_equal(mirror_low_res(low, preprocess_shape(300, 300, 256), 256), low[..., ::-1])
    assert np.array_equal(mirror_low_res(low, preprocess_shape(500, 1000, 256), 256), low[..., ::-1])
    # a tall image fills the left 32 columns: those are mirrored, the padding's are left alone
    tall = mirror_low_res(low, preprocess_shape(1000, 500, 256), 256)
    assert np.array_equal(tall[..., :32], low[..., :32][..., ::-1]) and np.array_equal(tall[..., 32:], low[..., 32:])
    # 510 px wide -> 131 of 256 input columns, 32.75 low-res ones: interpolated, and undone by a second mirror
    smooth = np.tile(np.linspace(-5, 5, 64, dtype=np.float32), (64, 1))[None]
    odd = mirror_low_res(smooth, preprocess_shape(1000, 510, 256), 256)
    assert np.array_equal(odd[..., 33:], smooth[..., 33:])
    step = float(smooth[0, 0, 1] - smooth[0, 0, 0])
    assert np.allclose(odd[0, 0, :32], smooth[0, 0, 0] + step * (31.75 - np.arange(32)), atol=1e-4)
    assert np.abs(mirror_low_res(odd, preprocess_shape(1000, 510, 256), 256) - smooth)[..., 1:32].max() < 1e-4  # column 0 meets the edge


def test_answer_is_the_mean_of_the_image_and_its_mirror(predictor, photo):
    flip = FlipPredictor(predictor)
    flip.set_image(photo)
    w = photo.shape[1]
    box = np.array([150, 20, 470, 330], np.float32)
    click = np.array([[300, 180]], np.float32)
    got_box = flip.predict(box=box, multimask_output=False, return_logits=True)
    got_click = flip.predict(point_coords=click, point_labels=np.array([1]), return_logits=True)
    a_box = predictor.predict(box=box, multimask_output=False, return_logits=True)  # predictor holds the photo
    a_click = predictor.predict(point_coords=click, point_labels=np.array([1]), return_logits=True)
    mirrored = Predictor(predictor.model)
    mirrored.set_image(np.ascontiguousarray(photo[:, ::-1]))
    b_box = mirrored.predict(box=np.array([w - 1 - 470, 20, w - 1 - 150, 330], np.float32), multimask_output=False,
                             return_logits=True)
    b_click = mirrored.predict(point_coords=np.array([[w - 1 - 300, 180]], np.float32), point_labels=np.array([1]),
                               return_logits=True)
    for got, a, b in ((got_box, a_box, b_box), (got_click, a_click, b_click)):
        assert np.allclose(got[0], (a[0] + b[0][..., ::-1]) / 2, atol=1e-4)
        assert np.allclose(got[1], (a[1] + b[1]) / 2, atol=1e-6)
        assert got[2].shape == a[2].shape
        assert not np.allclose(got[0], a[0], atol=1e-2)  # the mirror answer does change it
    # masks, not logits, by default; thresholded as the model thresholds
    masks, _, _ = flip.predict(box=box, multimask_output=False)
    assert masks.dtype == bool and np.array_equal(masks, got_box[0] > predictor.mask_threshold)


def test_answers_on_the_mirror_image_are_mirrored(predictor, photo):
    """Averaging over both views makes the answer mirror-symmetric: ask the mirrored photo the
    mirrored prompt and the answer is the mirror of the answer to the photo."""
    w = photo.shape[1]
    flip = FlipPredictor(predictor)
    flip.set_image(photo)
    box = np.array([[150, 20, 470, 330], [40, 200, 300, 400]], np.float32)
    a, sa, _ = flip.predict(box=box, multimask_output=False, return_logits=True)  # batched
    flip.set_image(np.ascontiguousarray(photo[:, ::-1]))
    mbox = np.stack([w - 1 - box[:, 2], box[:, 1], w - 1 - box[:, 0], box[:, 3]], 1)
    b, sb, _ = flip.predict(box=mbox, multimask_output=False, return_logits=True)
    assert a.shape == b.shape == (2, 1, *photo.shape[:2])
    assert np.allclose(a, b[..., ::-1], atol=1e-3) and np.allclose(sa, sb, atol=1e-5)


def test_mask_input_and_swapping_embedded_images(predictor, photo):
    flip = FlipPredictor(predictor)
    flip.set_image(photo)
    pts, labels = np.array([[300, 180], [520, 300]], np.float32), np.array([1, 0])
    first, _, low = flip.predict(point_coords=pts[:1], point_labels=labels[:1], multimask_output=False)
    second, scores, _ = flip.predict(point_coords=pts, point_labels=labels, mask_input=low, multimask_output=False)
    assert low.shape == (1, *predictor.mask_input_size) and second.shape == first.shape and 0 < scores[0] <= 1.5
    kept = flip.image_state
    kept_mirror = kept.mirror
    other = np.ascontiguousarray(photo[::-1])  # upside down: another image of the same size
    flip.set_image(other)
    assert not np.array_equal(flip.predict(point_coords=pts, point_labels=labels, mask_input=low)[0][0], second[0])
    flip.image_state = kept
    again, _, _ = flip.predict(point_coords=pts, point_labels=labels, mask_input=low, multimask_output=False)
    assert np.array_equal(again, second)
    # zoom asks the crop through the wrapper (both views) and puts both embedded images back
    logits, _, _ = flip.predict(box=np.array([280, 150, 340, 210]), multimask_output=False, return_logits=True)
    zoomed = zoom_refine(flip, photo, logits[0], box=np.array([280, 150, 340, 210]))
    assert zoomed.shape == photo.shape[:2] and flip.image_state is kept and kept.mirror is kept_mirror


def test_errors_say_what_to_do(predictor, photo):
    flip = FlipPredictor(Predictor(predictor.model))
    with pytest.raises(ValueError, match="set_image"):
        flip.predict(box=np.array([0, 0, 10, 10]))
    with pytest.raises(ValueError, match="already averages"):
        FlipPredictor(flip)
    flip.set_image(photo)
    with pytest.raises(ValueError, match="outside the 600x400 image"):
        flip.predict(point_coords=np.array([[900, 10]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="image_format"):
        flip.set_image(photo, image_format="HSV")
    flip.reset_image()
    assert not flip.is_image_set


def test_flip_helps_on_held_out_scenes(tmp_path, predictor):
    """Held-out synthetic scenes (seeds the model was not trained on) written as SA-1B files:
    box mIoU over 40 objects is higher with the mirror view than without."""
    from promptseg.train.synth import write_shard

    list(write_shard(tmp_path, 12, seed=5151))
    (_, insts), = load_dataset(tmp_path, per_image=4)
    insts = insts[:40]
    plain, flip = SamMethod(predictor), SamMethod(FlipPredictor(Predictor(predictor.model)))
    rows = []
    for inst in insts:
        img = read_image(inst.image_path)
        out = []
        for m in (plain, flip):
            m.set_image(img)
            out.append(evaluate_instance(m, inst, {"box"})["box"])
        rows.append(out)
    r = np.array(rows)
    assert len(r) == 40 and r[:, 1].mean() > r[:, 0].mean() + 0.002, r.mean(0)


def test_segment_and_eval_cli_with_flip(tmp_path):
    photo = sample_image_path("coffee.png")
    out = run("segment", photo, "--box", "150,20,470,330", "--flip", "--json", "-o", tmp_path / "m.png", "--quiet")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    mask = np.asarray(Image.open(tmp_path / "m.png")) > 0
    assert summary["flip"] is True and mask.sum() == summary["masks"][0]["area"] > 1000
    assert not mask[:, :149].any() or mask[:, :149].mean() < 0.01
    data = scene_folder(tmp_path / "bench", n=3)
    ev = run("eval", data, "--flip", "--protocols", "box,click", "--baselines", "none", "-o", tmp_path / "r.json",
             "--quiet")
    assert ev.returncode == 0, ev.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["flip"] is True and report["overall"]["promptseg tiny flip"]["instances"] == 3
    assert "promptseg tiny flip" in ev.stdout


def test_everything_mode_with_flip(tmp_path, predictor, photo):
    """MaskGenerator takes the wrapper: each grid click's candidates are the mean of the two
    views' (checked against the views asked by hand), and `everything --flip` writes masks for a
    real image file."""
    flip = FlipPredictor(Predictor(predictor.model))
    flip.set_image(photo)
    w = photo.shape[1]
    points = np.array([[300.0, 200.0], [100.0, 350.0]])
    predictor.set_image(photo)
    low, iou = flip.decode_points(flip.image_state, points)
    plain_low, plain_iou = (a.detach().numpy() for a in predictor.decode_points(predictor.image_state, points))
    mirrored = Predictor(predictor.model)
    mirrored.set_image(np.ascontiguousarray(photo[:, ::-1]))
    m_low, m_iou = (a.detach().numpy() for a in mirrored.decode_points(mirrored.image_state, np.c_[w - 1 - points[:, 0], points[:, 1]]))
    assert np.allclose(iou, (plain_iou + m_iou) / 2, atol=1e-5)
    assert np.allclose(low, (plain_low + mirror_low_res(m_low, preprocess_shape(*photo.shape[:2], predictor.img_size), predictor.img_size)) / 2, atol=1e-4)
    out = run("everything", sample_image_path("coffee.png"), "--flip", "-o", tmp_path / "ev", "--points-per-side", "8",
              "--no-overlay", "--quiet")
    assert out.returncode == 0, out.stderr
    records = json.loads((tmp_path / "ev" / "coffee.json").read_text())["annotations"]
    assert len(records) >= 1 and all(r["area"] > 0 for r in records)
