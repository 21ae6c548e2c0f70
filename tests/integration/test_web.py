"""The web page in a real headless Chromium (Debian's, driven by Playwright) against a served
process: upload a photo, click an object, see the mask appear over it, add a background click,
switch candidates, download the mask PNG; and the same with the decoder running in the page
(onnxruntime-web). Screenshots are saved under out/screenshots."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers import REPO
from promptseg import sample_image_path
from promptseg.masks import rle_to_mask
from promptseg.server import ort_web
from server_helpers import canvas_pixels, running_server, watched_page

SHOTS = REPO / "out" / "screenshots"


def click_at(page, x: float, y: float, shift: bool = False) -> None:
    """Click at image pixel (x, y), whatever the canvas's on-screen scale."""
    box = page.locator("#view").bounding_box()
    w = page.evaluate("() => document.getElementById('view').width")
    s = box["width"] / w
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(box["x"] + x * s, box["y"] + y * s)
    if shift:
        page.keyboard.up("Shift")


def test_click_to_segment_in_a_browser(browser, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    photo = sample_image_path("coffee.png")
    original = np.asarray(Image.open(photo).convert("RGB"))
    with running_server("--web-runtime", "off") as (url, _):
        page = browser.new_page(viewport={"width": 1100, "height": 800}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.set_input_files("#file", str(photo))
        page.wait_for_function("() => document.getElementById('status').className === 'ready'", timeout=60000)
        before = canvas_pixels(page)
        assert np.abs(before.astype(int) - original).max() <= 2  # the photo itself is drawn, untouched
        # the bundled weights' answers are refined with GrabCut unless the user turns it off
        assert page.input_value("#refine") == "grabcut"
        page.screenshot(path=str(SHOTS / "1_loaded.png"))

        # a click on the cup (image pixel 300, 200): a mask overlay appears over it
        click_at(page, 300, 200)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '1'", timeout=30000)
        after = canvas_pixels(page)
        changed = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 30
        assert changed[200, 300], "no overlay where the object was clicked"
        assert 0.002 < changed.mean() < 0.9
        # the overlay is the model's answer to that click, whatever the weights make of it
        image_id = page.evaluate("() => document.getElementById('view').dataset.imageId")
        expected, _ = server_mask(url, image_id, {"point_coords": [[300, 200]], "point_labels": [1],
                                                  "multimask_output": True})
        assert (changed == expected).mean() > 0.97, (changed == expected).mean()
        assert page.locator("#candidates button").count() == 3
        page.screenshot(path=str(SHOTS / "2_mask.png"))

        # download the mask PNG: the same size as the photo, on where the overlay is
        with page.expect_download() as dl:
            page.click("#download-png")
        target = tmp_path / "mask.png"
        dl.value.save_as(target)
        mask = np.asarray(Image.open(target).convert("L")) > 127
        assert mask.shape == original.shape[:2]
        assert mask[200, 300] and (mask == changed).mean() > 0.97

        # a background click (shift-click) refines it: one mask now, and the canvas changes again
        click_at(page, 520, 60, shift=True)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '2'", timeout=30000)
        assert page.locator("#candidates button").count() == 1
        refined = canvas_pixels(page)
        assert (np.abs(refined.astype(int) - after.astype(int)).sum(-1) > 30).any()
        page.screenshot(path=str(SHOTS / "3_negative_click.png"))

        # undo returns to the first answer's prompts
        page.click("#undo")
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '3'", timeout=30000)
        assert page.locator("#candidates button").count() == 3
        assert not errors, errors
        page.close()


def drag_box(page, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag a box over the photo from image pixel (x0, y0) to (x1, y1)."""
    box = page.locator("#view").bounding_box()
    s = box["width"] / page.evaluate("() => document.getElementById('view').width")
    page.mouse.move(box["x"] + x0 * s, box["y"] + y0 * s)
    page.mouse.down()
    page.mouse.move(box["x"] + (x0 + x1) / 2 * s, box["y"] + (y0 + y1) / 2 * s, steps=4)
    page.mouse.move(box["x"] + x1 * s, box["y"] + y1 * s, steps=4)
    page.mouse.up()


def download_mask(page, tmp_path: Path, name: str) -> np.ndarray:
    with page.expect_download() as dl:
        page.click("#download-png")
    target = tmp_path / name
    dl.value.save_as(target)
    return np.asarray(Image.open(target).convert("L")) > 127


def server_mask(url: str, image_id: str, body: dict) -> tuple[np.ndarray, list[float]]:
    """The server's own answer (the torch model) to the same prompt."""
    res = httpx.post(f"{url}/v1/images/{image_id}/segment", json={**body, "mask_format": "rle"}, timeout=60)
    assert res.status_code == 200, res.text
    doc = res.json()
    return rle_to_mask(doc["masks"][doc["best"]]), doc["scores"]


@pytest.fixture(scope="module")
def web_runtime() -> Path:
    """onnxruntime-web as a user installs it (make test fetches it beforehand; this fetches it
    from the npm registry if it is missing)."""
    return ort_web.install(quiet=True)


def test_decoding_in_the_browser(browser, web_runtime, tmp_path):
    """With onnxruntime-web served, clicks and boxes are decoded in the page from decoder.onnx
    and the served embedding: no /segment request, and the masks equal the server's."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    photo = sample_image_path("coffee.png")
    with running_server("--web-runtime", str(web_runtime)) as (url, _):
        page, errors, requests = watched_page(browser)
        page.goto(url)
        page.wait_for_function("() => !document.getElementById('local-group').hidden", timeout=30000)
        assert page.is_checked("#local")
        # the page decodes itself when nothing is refined (refinement needs the server's image)
        assert page.input_value("#refine") == "grabcut"
        page.select_option("#refine", "none")
        page.set_input_files("#file", str(photo))
        page.wait_for_function("() => document.getElementById('status').className === 'ready'", timeout=60000)
        image_id = page.evaluate("() => document.getElementById('view').dataset.imageId")
        before = canvas_pixels(page)

        click_at(page, 300, 200)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '1'", timeout=60000)
        assert page.evaluate("() => document.getElementById('view').dataset.decoder") == "browser"
        assert "decoded in this browser" in page.text_content("#status")
        assert not [u for u in requests if "/segment" in u], "a click went to the server"
        assert any(u.endswith("/v1/decoder.onnx") for u in requests)
        assert any("/embedding?format=raw" in u for u in requests)
        assert any(u.endswith("/ort/ort-wasm-simd-threaded.wasm") for u in requests)
        changed = np.abs(canvas_pixels(page).astype(int) - before.astype(int)).sum(-1) > 30
        assert changed[200, 300], "no overlay where the object was clicked"
        page.screenshot(path=str(SHOTS / "4_browser_decoding.png"))

        local = download_mask(page, tmp_path, "click.png")
        with page.expect_download() as dl:
            page.click("#download-json")
        doc = json.loads(Path(dl.value.path()).read_text())
        assert (rle_to_mask(doc["annotations"][0]["segmentation"]) == local).all()
        expected, scores = server_mask(url, image_id, {"point_coords": [[300, 200]], "point_labels": [1],
                                                       "multimask_output": True, "refine": "none"})
        assert (local == expected).mean() > 0.999, (local == expected).mean()
        assert (changed == expected).mean() > 0.97, "the overlay is not the answer to the click"
        shown = [float(b.split("·")[1]) for b in page.locator("#candidates button").all_text_contents()]
        assert np.allclose(shown, scores, atol=0.006)

        # a box dragged over the photo, decoded in the page too
        page.click("#reset")
        drag_box(page, 220, 120, 380, 280)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '2'", timeout=60000)
        drawn = page.evaluate("() => document.getElementById('view').dataset.box")
        local = download_mask(page, tmp_path, "box.png")
        expected, _ = server_mask(url, image_id, {"box": [float(v) for v in drawn.split(",")],
                                                  "multimask_output": False, "refine": "none"})
        assert (local == expected).mean() > 0.999
        assert not [u for u in requests if "/segment" in u], "a box went to the server"

        # switched off, the next prompt goes to the server
        page.uncheck("#local")
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '3'", timeout=60000)
        assert page.evaluate("() => document.getElementById('view').dataset.decoder") == "server"

        # "Refine" asks the server (which has the image) even while the page decodes
        page.check("#local")
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '4'", timeout=60000)
        page.select_option("#refine", "zoom+grabcut")
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '5'", timeout=60000)
        assert page.evaluate("() => document.getElementById('view').dataset.decoder") == "server"
        refined = download_mask(page, tmp_path, "refined.png")
        expected, _ = server_mask(url, image_id, {"box": [float(v) for v in drawn.split(",")],
                                                  "multimask_output": False, "refine": "zoom+grabcut"})
        assert (refined == expected).all() and (refined != local).any()
        page.screenshot(path=str(SHOTS / "5_refined_edges.png"))
        assert not errors, errors
        page.close()


def test_decoding_a_sam2_model_in_the_browser(browser, web_runtime, tmp_path, sam2_t_checkpoint):
    """A SAM 2.1 model served: the page fetches its three embedding levels and decodes a click,
    a box and a box with a background click itself (SAM 2's point order and single-mask
    choice), and its masks equal the server's."""
    photo = sample_image_path("coffee.png")
    with running_server("--checkpoint", str(sam2_t_checkpoint[1]), "--web-runtime", str(web_runtime)) as (url, _):
        page, errors, requests = watched_page(browser)
        page.goto(url)
        page.wait_for_function("() => !document.getElementById('local-group').hidden", timeout=30000)
        if page.input_value("#refine") != "none":
            page.select_option("#refine", "none")
        page.set_input_files("#file", str(photo))
        page.wait_for_function("() => document.getElementById('status').className === 'ready'", timeout=120000)
        image_id = page.evaluate("() => document.getElementById('view').dataset.imageId")

        click_at(page, 300, 200)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '1'", timeout=120000)
        assert page.evaluate("() => document.getElementById('view').dataset.decoder") == "browser"
        for level in ("image_embeddings", "high_res_feats_0", "high_res_feats_1"):
            assert any(f"level={level}" in u for u in requests), level
        local = download_mask(page, tmp_path, "click.png")
        expected, scores = server_mask(url, image_id, {"point_coords": [[300, 200]], "point_labels": [1],
                                                       "multimask_output": True, "refine": "none"})
        assert (local == expected).mean() > 0.999, (local == expected).mean()
        shown = [float(b.split("·")[1]) for b in page.locator("#candidates button").all_text_contents()]
        assert np.allclose(shown, scores, atol=0.006)

        page.click("#reset")
        drag_box(page, 220, 120, 380, 280)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '2'", timeout=120000)
        drawn = [float(v) for v in page.evaluate("() => document.getElementById('view').dataset.box").split(",")]
        local = download_mask(page, tmp_path, "box.png")
        expected, _ = server_mask(url, image_id, {"box": drawn, "multimask_output": False, "refine": "none"})
        assert (local == expected).mean() > 0.999

        click_at(page, 250, 150, shift=True)  # a background click inside the box
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '3'", timeout=120000)
        local = download_mask(page, tmp_path, "box_click.png")
        expected, _ = server_mask(url, image_id, {"box": drawn, "point_coords": [[250, 150]], "point_labels": [0],
                                                  "multimask_output": False, "refine": "none"})
        assert (local == expected).mean() > 0.999
        assert not [u for u in requests if "/segment" in u], "a prompt went to the server"
        assert not errors, errors
        page.close()


def test_readme_screenshot(browser):
    """The README's picture of the page with a mask (written to out/screenshots/page.png)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with running_server("--web-runtime", "off") as (url, _):
        page = browser.new_page(viewport={"width": 900, "height": 560})
        page.goto(url)
        page.select_option("#sample", "chelsea.png")
        page.wait_for_function("() => document.getElementById('status').className === 'ready'", timeout=60000)
        click_at(page, 200, 150)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '1'", timeout=30000)
        png = page.screenshot(path=str(SHOTS / "page.png"))
        assert Image.open(io.BytesIO(png)).size == (900, 560)
        page.close()


def test_an_hq_sam_model_in_the_browser(browser, tmp_path):
    """An HQ-SAM model served: the page offers "HQ mask only", a click shows the one mask
    (SAM's plus the HQ token's), and ticking the box asks for the HQ token's alone and shows it,
    each the server's own answer."""
    import torch

    from helpers import randomize_
    from promptseg import build_model

    checkpoint = tmp_path / "sam_hq_vit_tiny.pth"
    torch.save(randomize_(build_model("vit_tiny_hq"), seed=9).state_dict(), checkpoint)
    photo = sample_image_path("coffee.png")
    with running_server("--checkpoint", str(checkpoint), "--web-runtime", "off") as (url, _):
        page, errors, _ = watched_page(browser)
        page.goto(url)
        page.set_input_files("#file", str(photo))
        page.wait_for_function("() => document.getElementById('status').className === 'ready'", timeout=60000)
        assert page.is_visible("#hq-only") and not page.is_visible("#local")
        page.select_option("#refine", "none")
        before = canvas_pixels(page)
        image_id = page.evaluate("() => document.getElementById('view').dataset.imageId")
        prompt = {"point_coords": [[300, 200]], "point_labels": [1], "multimask_output": True, "refine": "none"}
        both, _ = server_mask(url, image_id, prompt)
        alone, _ = server_mask(url, image_id, {**prompt, "hq_token_only": True})
        assert both.mean() > 0.01 and alone.mean() > 0.01  # something to see (they differ little: random weights)

        def overlay():
            return np.abs(canvas_pixels(page).astype(int) - before.astype(int)).sum(-1) > 30

        with page.expect_response(lambda r: r.url.endswith("/segment")):
            click_at(page, 300, 200)
        page.wait_for_function("() => document.getElementById('view').dataset.masks === '1'", timeout=30000)
        page.wait_for_timeout(300)
        assert (overlay() == both).mean() > 0.97
        with page.expect_response(lambda r: r.url.endswith("/segment")) as answer:
            page.check("#hq-only")
        assert json.loads(answer.value.request.post_data)["hq_token_only"] is True
        page.wait_for_timeout(300)
        assert (overlay() == alone).mean() > 0.97
        page.screenshot(path=str(SHOTS / "6_hq_sam.png"))
        assert not errors, errors
