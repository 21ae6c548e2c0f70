"""Text prompts end to end with real Hugging Face detectors (Grounding DINO and OWLv2 from small
configurations with random weights, saved to a folder and loaded by path as users load theirs)
on real photos: the library, `segment --text`, and `label` on both engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detectors import make_grounding_dino, make_owlv2
from helpers import run
from promptseg import load_predictor, sample_image_path

pytest.importorskip("transformers", reason="the text extra is installed in the test venv (make test)")

CLASSES = ["cup", "spoon", "cat"]


@pytest.fixture(scope="module")
def detectors(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("detectors")
    return {"grounding-dino": make_grounding_dino(root / "gdino"), "owlv2": make_owlv2(root / "owlv2")}


@pytest.mark.parametrize("kind", ["grounding-dino", "owlv2"])
def test_the_pipeline_runs_on_a_photo_and_honours_thresholds(detectors, kind):
    from promptseg.text import GroundingDinoDetector, Owlv2Detector, TextPredictor, load_detector

    detector = load_detector(detectors[kind])
    assert isinstance(detector, GroundingDinoDetector if kind == "grounding-dino" else Owlv2Detector)
    text = TextPredictor(load_predictor(), detector, box_threshold=0.1, text_threshold=0.1)
    text.set_image(sample_image_path("coffee"))
    low = text.predict_text(CLASSES)
    assert len(low) >= 3
    for r in low:
        assert r["label"] in CLASSES and r["category_id"] == CLASSES.index(r["label"]) + 1
        assert 0.1 < r["score"] <= 1 and 0 <= r["predicted_iou"]
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 400
        assert r["segmentation"].shape == (400, 600) and r["segmentation"].dtype == bool
        assert r["area"] == int(r["segmentation"].sum())
    assert [r["score"] for r in low] == sorted((r["score"] for r in low), reverse=True)
    cut = np.median([r["score"] for r in low])
    high = text.predict_text(CLASSES, box_threshold=float(cut))
    assert 0 < len(high) < len(low) and all(r["score"] >= cut for r in high)
    assert {tuple(r["box"]) for r in high} <= {tuple(r["box"]) for r in low}
    if kind == "grounding-dino":  # no box can match a class name better than certainty
        assert text.predict_text(CLASSES, text_threshold=1.0) == []


def test_segment_text_on_the_command_line(detectors, tmp_path):
    image = sample_image_path("coffee")
    out = run("segment", image, "--text", "cup. spoon.", "--detector", detectors["grounding-dino"],
              "--box-threshold", "0.2", "--text-threshold", "0.1", "-o", tmp_path / "out", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    objects = summary["objects"]
    assert summary["classes"] == ["cup", "spoon"] and objects
    for i, obj in enumerate(objects):
        mask = np.asarray(Image.open(obj["path"])) > 0
        assert Path(obj["path"]).name == f"{i:03d}_{obj['label']}.png" and mask.sum() == obj["area"]
        assert obj["score"] > 0.2 and {"predicted_iou", "box", "bbox", "category_id"} <= set(obj)
    overlay = np.asarray(Image.open(summary["overlay"]))
    assert overlay.shape == (400, 600, 3)
    # bad input: one line each, no traceback
    for args, message in (
        (["--text", " . "], "the text names no class"),
        (["--text", "cup", "--box-threshold", "1.5"], "--box-threshold must be a number in [0, 1], got 1.5"),
        (["--text", "cup", "--detector", "yolo"], "unknown detector 'yolo'"),
        (["--text", "cup", "--detector", tmp_path], "has no config.json"),
        (["--text", "cup", "--point", "10,10"], "--text finds its own boxes"),
    ):
        bad = run("segment", image, *args, "-o", tmp_path / "bad")
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


def test_label_a_folder_on_both_engines(detectors, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee", "chelsea"):
        shutil.copy(sample_image_path(name), photos / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    args = ["--text", "cup. spoon. cat.", "--detector", detectors["owlv2"], "--box-threshold", "0.3", "--threads", "1",
            "--quiet"]
    local = run("label", photos, "-o", tmp_path / "local", *args)
    assert local.returncode == 1 and "broken.jpg: cannot read" in local.stderr, local.stderr
    coco = json.loads((tmp_path / "local" / "annotations.json").read_text())
    assert coco["categories"] == [{"id": i, "name": n, "supercategory": "object"}
                                  for i, n in enumerate(["cup", "spoon", "cat"], start=1)]
    assert [im["file_name"] for im in coco["images"]] == ["chelsea.png", "coffee.png"]
    assert coco["annotations"] and {a["category_id"] for a in coco["annotations"]} <= {1, 2, 3}
    assert all(a["label"] == coco["categories"][a["category_id"] - 1]["name"] for a in coco["annotations"])
    from pycocotools.coco import COCO

    COCO(str(tmp_path / "local" / "annotations.json"))  # pycocotools reads it
    again = run("label", photos, "-o", tmp_path / "local", *args[:-1])
    assert "0 labelled" in again.stderr and "2 already done" in again.stderr
    ray = run("label", photos, "-o", tmp_path / "ray", *args, "--engine", "ray", "--workers", "2")
    assert ray.returncode == 1 and "broken.jpg" in ray.stderr, ray.stderr
    assert (tmp_path / "ray" / "annotations.json").read_bytes() == (tmp_path / "local" / "annotations.json").read_bytes()


def test_text_prompts_over_http_and_in_the_page(detectors, browser):
    """`serve --detector FOLDER`: POST /v1/images/{id}/text answers as the library does; bad
    requests are 422 with the reason; the page's Find box draws the labelled masks."""
    import httpx

    from promptseg.masks import decode_coco_rle
    from promptseg.text import TextPredictor, load_detector
    from server_helpers import canvas_pixels, running_server, watched_page

    photo = sample_image_path("coffee")
    with running_server("--web-runtime", "off", "--detector", str(detectors["grounding-dino"])) as (url, _):
        assert httpx.get(f"{url}/v1/models").json()[0]["text_prompts"] is True
        up = httpx.post(f"{url}/v1/images", files={"file": ("coffee.png", photo.read_bytes(), "image/png")}, timeout=60)
        image_id = up.json()["id"]
        res = httpx.post(f"{url}/v1/images/{image_id}/text", json={"text": "cup. spoon.", "box_threshold": 0.2,
                                                                     "text_threshold": 0.1}, timeout=60)
        assert res.status_code == 200, res.text
        body = res.json()
        text = TextPredictor(load_predictor(), load_detector(detectors["grounding-dino"]), 0.2, 0.1)
        text.set_image(photo)
        expected = text.predict_text("cup. spoon.")
        assert body["classes"] == ["cup", "spoon"] and len(body["objects"]) == len(expected) > 0
        for got, want in zip(body["objects"], expected):
            assert got["label"] == want["label"] and got["box"] == pytest.approx(want["box"])
            assert got["score"] == pytest.approx(want["score"], abs=1e-6)
            assert np.array_equal(decode_coco_rle(got["segmentation"]), want["segmentation"])
        for bad, message in (({"text": " . "}, "names no class"), ({"text": "cup", "box_threshold": 2},
                                                                    "box_threshold"), ({}, "text")):
            r = httpx.post(f"{url}/v1/images/{image_id}/text", json=bad, timeout=30)
            assert r.status_code == 422 and message in r.json()["detail"], r.text

        page, errors, _ = watched_page(browser)
        page.goto(url)
        page.set_input_files("#file", str(photo))
        page.wait_for_function("() => document.getElementById('status').className === 'ready'", timeout=60000)
        before = canvas_pixels(page)
        page.fill("#text", "cup. spoon.")
        page.click("#find")
        page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Found')",
                               timeout=60000)
        status = page.text_content("#status")
        assert f"{sum(o['label'] == 'cup' for o in body['objects'])} cup" in status, status
        after = canvas_pixels(page)
        changed = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 30
        first = decode_coco_rle(body["objects"][0]["segmentation"])
        assert changed[first].mean() > 0.9  # the masks are drawn
        x0, y0 = (int(v) for v in body["objects"][0]["box"][:2])
        assert changed[max(0, y0 - 8):y0, x0:x0 + 20].any()  # and the label's tag above the box
        page.screenshot(path=str(Path(__file__).resolve().parents[2] / "out" / "screenshots" / "text_prompt.png"))
        assert not errors, errors
        page.close()
    with running_server("--web-runtime", "off") as (url, _):  # without a detector: off, and said so
        assert httpx.get(f"{url}/v1/models").json()[0]["text_prompts"] is False
        up = httpx.post(f"{url}/v1/images", files={"file": ("coffee.png", photo.read_bytes(), "image/png")}, timeout=60)
        r = httpx.post(f"{url}/v1/images/{up.json()['id']}/text", json={"text": "cup"}, timeout=30)
        assert r.status_code == 404


def test_more_class_names_than_grounding_dino_reads_at_once(detectors):
    """Class names beyond the model's text length go in several passes; each pass is the
    detection of its own names, labels counted from its first."""
    import numpy as np

    from promptseg.text import load_detector

    detector = load_detector(detectors["grounding-dino"])  # reads 32 tokens: 30 besides [CLS], [SEP]
    names = ["cup", "spoon", "cat", "car", "person", "bicycle", "dog", "plate"] + [f"thing{i}" for i in range(12)]
    chunks = list(detector.class_chunks(names))
    assert len(chunks) >= 2 and [c for _, c in chunks for c in c] == names
    photo = np.asarray(Image.open(sample_image_path("coffee")).convert("RGB"))
    whole = detector.detect(photo, names, 0.1, 0.05)
    for start, chunk in chunks:
        alone = detector.detect(photo, chunk, 0.1, 0.05)
        part = (whole.labels >= start) & (whole.labels < start + len(chunk))
        assert np.array_equal(whole.boxes[part], alone.boxes) and np.array_equal(whole.labels[part] - start, alone.labels)
    assert len(whole.labels) and whole.labels.max() >= chunks[1][0]
