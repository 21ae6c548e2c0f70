"""Predictor behaviour: bad prompts, batches, saved embeddings, image kinds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from promptseg import Predictor

PT = np.array([[300.0, 200.0]])
LB = np.array([1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "no prompt given"),
        (dict(point_coords=PT), "go together"),
        (dict(point_coords=np.array([300.0, 200.0]), point_labels=LB), "must be Nx2"),
        (dict(point_coords=PT, point_labels=np.array([1, 0])), "must have shape"),
        (dict(point_coords=PT, point_labels=np.array([2])), "must be 1 .*or 0"),
        (dict(point_coords=np.array([[np.nan, 3.0]]), point_labels=LB), "NaN or infinite"),
        (dict(point_coords=np.array([[np.inf, 3.0]]), point_labels=LB), "NaN or infinite"),
        (dict(point_coords=np.array([[700.0, 200.0]]), point_labels=LB), "outside the 600x400 image"),
        (dict(point_coords=np.array([[-1.0, 200.0]]), point_labels=LB), "outside"),
        (dict(point_coords=[["a", "b"]], point_labels=LB), "numeric"),
        (dict(box=np.array([400.0, 50.0, 100.0, 300.0])), "empty or inverted"),
        (dict(box=np.array([10.0, 10.0, 10.0, 300.0])), "empty or inverted"),
        (dict(box=np.array([700.0, 10.0, 900.0, 300.0])), "wholly outside"),
        (dict(box=np.array([1.0, 2.0, 3.0])), "x0, y0, x1, y1"),
        (dict(mask_input=np.zeros((1, 64, 64))), "mask_input must be"),
        (
            dict(
                box=np.array([[0, 0, 100, 100], [0, 0, 50, 50]]),
                point_coords=np.zeros((3, 1, 2)),
                point_labels=np.ones((3, 1)),
            ),
            "disagree in count",
        ),
    ],
)
def test_bad_prompts_name_the_problem(small_predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_predictor.predict(**kwargs)


def test_no_image_set(small_pair):
    with pytest.raises(ValueError, match="no image is set"):
        Predictor(small_pair[1]).predict(point_coords=PT, point_labels=LB)


def test_box_partly_outside_is_clipped(small_predictor):
    clipped = small_predictor.predict(box=np.array([100.0, 50.0, 600.0, 400.0]), multimask_output=False)
    partly = small_predictor.predict(box=np.array([100.0, 50.0, 900.0, 650.0]), multimask_output=False)
    np.testing.assert_array_equal(clipped[0], partly[0])
    np.testing.assert_allclose(clipped[1], partly[1])


def test_shapes_and_dtypes(small_predictor):
    masks, scores, low = small_predictor.predict(PT, LB)
    assert masks.shape == (3, 400, 600) and masks.dtype == bool
    assert scores.shape == (3,) and low.shape == (3, 256, 256)
    masks, scores, low = small_predictor.predict(PT, LB, multimask_output=False, return_logits=True)
    assert masks.shape == (1, 400, 600) and masks.dtype == np.float32


def test_batched_prompts_equal_one_by_one(small_predictor):
    boxes = np.array([[100.0, 50.0, 400.0, 300.0], [300.0, 100.0, 580.0, 390.0]])
    pts = np.array([[[200.0, 150.0], [10.0, 10.0]], [[400.0, 250.0], [350.0, 120.0]]])
    labels = np.array([[1, 0], [1, 0]])
    masks, scores, low = small_predictor.predict(point_coords=pts, point_labels=labels, box=boxes)
    assert masks.shape == (2, 3, 400, 600)
    one = small_predictor.predict(point_coords=pts[0], point_labels=labels[0], box=boxes[0])
    two = small_predictor.predict(point_coords=pts[1], point_labels=labels[1], box=boxes[1])
    for i, single in enumerate((one, two)):
        np.testing.assert_allclose(low[i], single[2], atol=1e-4 * np.abs(single[2]).max())
        assert (masks[i] == single[0]).mean() > 0.9999


def test_padding_label_is_accepted_in_batches(small_predictor):
    pts = np.array([[[200.0, 150.0], [0.0, 0.0]], [[400.0, 250.0], [350.0, 120.0]]])
    masks, scores, low = small_predictor.predict(point_coords=pts, point_labels=np.array([[1, -1], [1, 0]]))
    assert masks.shape == (2, 3, 400, 600)


def test_mask_input_refines(small_predictor):
    masks, scores, low = small_predictor.predict(PT, LB)
    best = low[np.argmax(scores)][None]
    refined = small_predictor.predict(PT, LB, mask_input=best, multimask_output=False)
    assert refined[0].shape == (1, 400, 600)
    # the mask prompt changes the answer: it is used
    assert not np.allclose(refined[2][0], low[np.argmax(scores)])


def test_embedding_round_trip(small_pair, small_predictor, tmp_path):
    path = tmp_path / "coffee.emb.safetensors"
    small_predictor.save_embedding(path)
    fresh = Predictor(small_pair[1])
    fresh.load_embedding(path)
    assert fresh.original_size == (400, 600) and fresh.input_size == small_predictor.input_size
    a = small_predictor.predict(PT, LB)
    b = fresh.predict(PT, LB)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_embedding_file_errors(small_pair, tmp_path):
    pred = Predictor(small_pair[1])
    with pytest.raises(FileNotFoundError):
        pred.load_embedding(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not an embedding"):
        pred.load_embedding(junk)


def test_image_batch(small_pair, photo):
    pred = Predictor(small_pair[1])
    flipped = np.ascontiguousarray(photo[::-1])
    pred.set_image_batch([photo, flipped], batch_size=2)
    results = pred.predict_batch([dict(point_coords=PT, point_labels=LB), dict(box=np.array([50, 50, 300, 300]))])
    single = Predictor(small_pair[1])
    single.set_image(flipped)
    alone = single.predict(box=np.array([50, 50, 300, 300]))
    np.testing.assert_allclose(results[1][2], alone[2], atol=1e-4 * np.abs(alone[2]).max())
    assert results[0][0].shape == (3, 400, 600)
    with pytest.raises(ValueError, match="one per image"):
        pred.predict_batch([dict(box=np.array([50, 50, 300, 300]))])


def test_image_kinds_give_the_same_embedding_input(small_pair, photo, tmp_path):
    """A path, a PIL image and an array of the same photo embed identically; gray, RGBA,
    palette and 16-bit files are accepted and come out as HxWx3."""
    from promptseg import read_image

    path = tmp_path / "p.png"
    Image.fromarray(photo).save(path)
    assert np.array_equal(read_image(path), photo)
    assert np.array_equal(read_image(Image.fromarray(photo)), photo)
    gray = tmp_path / "g.png"
    Image.fromarray(photo[..., 0]).save(gray)
    assert read_image(gray).shape == (400, 600, 3)
    rgba = tmp_path / "a.png"
    Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])).save(rgba)
    assert np.array_equal(read_image(rgba), photo)
    pal = tmp_path / "pal.png"
    Image.fromarray(photo).convert("P").save(pal)
    assert read_image(pal).shape == (400, 600, 3)
    deep = tmp_path / "16.png"
    Image.fromarray(photo[..., 1].astype(np.uint16) * 257).save(deep)
    assert np.abs(read_image(deep)[..., 0].astype(int) - photo[..., 1]).max() <= 1
    assert np.array_equal(read_image(photo[..., 1].astype(np.uint16) * 257)[..., 0], photo[..., 1])


def test_exif_orientation_is_applied(tmp_path, photo):
    from promptseg import read_image

    img = Image.fromarray(photo)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display needs a 90-degree clockwise turn
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (600, 400, 3)


def test_unreadable_images(tmp_path):
    from promptseg import read_image

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(bad)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="shape"):
        read_image(np.zeros((5, 5, 7), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        read_image(np.zeros((5, 5, 3), np.int64))


def test_sample_image_names():
    from promptseg import sample_image_path

    assert sample_image_path("coffee") == sample_image_path("coffee.png") == sample_image_path()
    assert sample_image_path("chelsea").name == "chelsea.png"
    with pytest.raises(FileNotFoundError, match="try 'coffee.png'"):
        sample_image_path("astronaut")
