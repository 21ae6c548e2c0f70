"""Text prompts with a stub detector that returns known boxes: the masks are the predictor's own
answers for those boxes, and labels, scores, NMS, thresholds and COCO categories are right; bad
input is one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from promptseg import load_predictor, sample_image_path
from promptseg.formats import annotation
from promptseg.io import read_image
from promptseg.text import Detections, TextPredictor, coco_categories, load_detector, parse_classes

BOXES = np.array([[150, 60, 470, 380],   # cup
                  [160, 70, 465, 375],   # the same cup, less sure: removed by NMS
                  [320, 60, 410, 330],   # spoon, overlapping the cup: another class, kept
                  [10, 10, 60, 60],      # spoon below the threshold
                  [500, 100, 500, 200],  # no width
                  [-40, 300, 120, 900]], dtype=np.float32)  # past the image: clipped
SCORES = np.array([0.9, 0.8, 0.7, 0.2, 0.95, 0.6], dtype=np.float32)
LABELS = np.array([0, 0, 1, 1, 1, 2])


class StubDetector:
    def __init__(self):
        self.calls = []

    def detect(self, image, classes, box_threshold, text_threshold):
        self.calls.append((image.shape, list(classes), box_threshold, text_threshold))
        return Detections(BOXES, SCORES, LABELS)


@pytest.fixture(scope="module")
def predictor():
    return load_predictor()


def test_masks_are_the_predictors_answers_for_the_kept_boxes(predictor):
    stub = StubDetector()
    text = TextPredictor(predictor, stub, box_threshold=0.3, text_threshold=0.2)
    text.set_image(sample_image_path("coffee"))
    records = text.predict_text("Cup.  spoon. plate. cup.")
    assert stub.calls == [((400, 600, 3), ["cup", "spoon", "plate"], 0.3, 0.2)]
    assert [(r["label"], r["category_id"], r["score"]) for r in records] == [
        ("cup", 1, pytest.approx(0.9)), ("spoon", 2, pytest.approx(0.7)), ("plate", 3, pytest.approx(0.6))]
    kept = np.array([[150, 60, 470, 380], [320, 60, 410, 330], [0, 300, 120, 400]], dtype=np.float32)
    assert np.array_equal(np.array([r["box"] for r in records], dtype=np.float32), kept)
    predictor.set_image(read_image(sample_image_path("coffee")))
    masks, ious, _ = predictor.predict(box=kept, multimask_output=False)
    for i, r in enumerate(records):
        assert np.array_equal(r["segmentation"], masks[i, 0]) and r["segmentation"].any()
        assert r["predicted_iou"] == pytest.approx(float(ious[i, 0]), abs=0)
        assert r["area"] == int(masks[i, 0].sum())
        ys, xs = np.nonzero(masks[i, 0])
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
    one, _, _ = predictor.predict(box=kept[1], multimask_output=False)
    assert np.array_equal(one[0], records[1]["segmentation"])  # one box alone: the same mask
    # thresholds per call; a higher one keeps a subset
    assert [r["label"] for r in text.predict_text(["cup", "spoon", "plate"], box_threshold=0.75)] == ["cup"]
    assert text.predict_text("cup", box_threshold=1.0) == []
    rle = text.predict_text("cup. spoon. plate.", output_mode="coco_rle")
    ann = annotation(rle[0], 1, image_id=7)
    assert ann["category_id"] == 1 and ann["label"] == "cup" and ann["image_id"] == 7
    assert ann["segmentation"]["size"] == [400, 600] and isinstance(ann["segmentation"]["counts"], str)


def test_classes_and_categories():
    assert parse_classes("car. person, bicycle;;  Traffic   light.") == ["car", "person", "bicycle", "traffic light"]
    assert parse_classes(["Cat", "cat", "dog"]) == ["cat", "dog"]
    assert coco_categories(["car", "person"]) == [{"id": 1, "name": "car", "supercategory": "object"},
                                                  {"id": 2, "name": "person", "supercategory": "object"}]


def test_bad_input_is_one_clear_error(predictor, tmp_path, monkeypatch):
    text = TextPredictor(predictor, StubDetector())
    with pytest.raises(ValueError, match="no image is set"):
        text.predict_text("cup")
    text.set_image(sample_image_path("coffee"))
    for bad in ("", " . , ", []):
        with pytest.raises(ValueError, match="names no class"):
            text.predict_text(bad)
    with pytest.raises(ValueError, match=r"box threshold must be a number in \[0, 1\], got 1.5"):
        text.predict_text("cup", box_threshold=1.5)
    with pytest.raises(ValueError, match=r"text threshold must be a number in \[0, 1\]"):
        TextPredictor(predictor, StubDetector(), text_threshold=-0.1)
    with pytest.raises(ValueError, match="needs a detect"):
        TextPredictor(predictor, object())
    with pytest.raises(ValueError, match="unknown detector 'yolo': give grounding-dino-tiny"):
        load_detector("yolo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        load_detector(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "grounding-dino"}')
    with pytest.raises(ValueError, match="cannot load the detector .*broken"):
        load_detector(tmp_path / "broken")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="holds a 'bert' model; text prompts take Grounding DINO or OWLv2"):
        load_detector(tmp_path / "other")
    # a hub id, not cached, with the hub out of reach: an error at once, not minutes of retries
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="cannot fetch the detector IDEA-Research/grounding-dino-tiny: "
                                         "http://127.0.0.1:9 cannot be reached"):
        load_detector()


def test_a_detector_giving_mismatched_arrays_is_refused():
    with pytest.raises(ValueError, match="gave 2 boxes, 1 scores and 2 labels"):
        Detections(np.zeros((2, 4)), [0.5], [0, 1])
