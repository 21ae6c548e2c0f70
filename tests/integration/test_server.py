"""The HTTP API through real HTTP on 127.0.0.1, against a `promptseg serve` process the tests
start: answers equal the Predictor's, every class of bad input gets a clear 4xx, concurrent
clients share one embedding, nothing is lost and memory stays within the cache budget."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from PIL import Image

from promptseg import MaskGenerator, Predictor, default_model, sample_image_path
from promptseg.masks import decode_coco_rle, rle_to_mask
from server_helpers import peak_rss_bytes, reset_peak_rss, rss_bytes, running_server

COFFEE = sample_image_path("coffee.png")


@pytest.fixture(scope="module")
def server():
    with running_server("--cache-mb", "64", "--max-upload-mb", "2", "--max-megapixels", "1",
                        "--web-runtime", "off") as (url, proc):
        yield url, proc


@pytest.fixture(scope="module")
def predictor():
    pred = Predictor(default_model())
    pred.set_image(COFFEE)
    return pred


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def test_health_models_page_and_docs(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["cache_budget_bytes"] == 64 * 2**20
    models = client.get("/v1/models").json()
    assert models[0]["name"] == "tiny" and models[0]["embedding_shape"] == [1, 256, 16, 16]
    page = client.get("/")
    assert page.status_code == 200 and "promptseg" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/images", "/v1/images/{image_id}/segment", "/v1/images/{image_id}/everything",
              "/v1/images/{image_id}/embedding", "/healthz", "/v1/models"):
        assert p in paths
    assert client.get("/v1/samples").json() == ["coffee.png", "chelsea.png"]
    assert client.get("/v1/samples/coffee.png").content == COFFEE.read_bytes()


def test_upload_is_content_addressed_and_cached(client, coffee_id):
    # same bytes under another name and a wrong content type: sniffed, same id, already embedded
    res = client.post("/v1/images", files={"file": ("photo.jpg", COFFEE.read_bytes(), "text/plain")})
    body = res.json()
    assert res.status_code == 200 and body == {**body, "id": coffee_id, "width": 600, "height": 400, "cached": True}


def test_segment_matches_the_predictor(client, coffee_id, predictor):
    req = {"point_coords": [[300, 200], [120, 80]], "point_labels": [1, 0], "multimask_output": True, "refine": "none"}
    res = client.post(f"/v1/images/{coffee_id}/segment", json=req)
    assert res.status_code == 200, res.text
    body = res.json()
    masks, scores, _ = predictor.predict(np.array(req["point_coords"]), np.array(req["point_labels"]))
    assert len(body["masks"]) == 3 and len(body["logits"]) == 3
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-5, atol=1e-6)
    for rle, mask in zip(body["masks"], masks):
        assert (decode_coco_rle(rle) == mask).all()
    assert body["best"] == int(np.argmax(scores))


def test_refinement_handle_png_and_box(client, coffee_id, predictor):
    first = client.post(f"/v1/images/{coffee_id}/segment",
                        json={"point_coords": [[300, 200]], "point_labels": [1], "refine": "none"})
    best = first.json()["best"]
    _, _, logits = predictor.predict(np.array([[300, 200]]), np.array([1]))
    req = {"point_coords": [[300, 200], [450, 330]], "point_labels": [1, 0], "box": [150, 60, 470, 380],
           "mask_input": first.json()["logits"][best], "multimask_output": False, "mask_format": "png",
           "refine": "none"}
    res = client.post(f"/v1/images/{coffee_id}/segment", json=req)
    assert res.status_code == 200, res.text
    masks, scores, _ = predictor.predict(np.array(req["point_coords"]), np.array(req["point_labels"]),
                                         np.array(req["box"]), logits[best][None], multimask_output=False)
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(res.json()["masks"][0])))) > 0
    assert (got == masks[0]).all()
    assert res.json()["scores"] == pytest.approx(scores.tolist(), rel=1e-5)


def test_segment_refined_with_grabcut(client, coffee_id, predictor):
    from promptseg import read_image
    from promptseg.refine import refine_mask

    req = {"box": [150, 20, 470, 330], "multimask_output": False, "mask_format": "rle", "refine": "grabcut"}
    res = client.post(f"/v1/images/{coffee_id}/segment", json=req)
    assert res.status_code == 200, res.text
    logits, scores, _ = predictor.predict(box=np.array(req["box"]), multimask_output=False, return_logits=True)
    want = refine_mask("grabcut", read_image(COFFEE), logits[0], box=np.array(req["box"]))
    got = rle_to_mask(res.json()["masks"][0])
    assert (got == want).all() and not (got == (logits[0] > 0)).all()
    assert res.json()["areas"] == [int(want.sum())]
    assert res.json()["scores"] == pytest.approx(scores.tolist(), rel=1e-5)  # the model's, as without refining


def test_segment_refines_with_the_weights_default(client, coffee_id, predictor):
    """Unset, `refine` is the one chosen for the model's weights (GrabCut for the bundled model,
    as /v1/models says); "none" gives the model's own answer."""
    from promptseg import read_image
    from promptseg.refine import refine_mask

    assert client.get("/v1/models").json()[0]["refine"] == "grabcut"
    req = {"box": [150, 20, 470, 330], "multimask_output": False, "mask_format": "rle"}
    default = rle_to_mask(client.post(f"/v1/images/{coffee_id}/segment", json=req).json()["masks"][0])
    plain = rle_to_mask(client.post(f"/v1/images/{coffee_id}/segment", json={**req, "refine": "none"}).json()["masks"][0])
    logits, _, _ = predictor.predict(box=np.array(req["box"]), multimask_output=False, return_logits=True)
    assert (default == refine_mask("grabcut", read_image(COFFEE), logits[0], box=np.array(req["box"]))).all()
    assert (plain == (logits[0] > 0)).all() and not (plain == default).all()


def test_segment_refined_with_zoom(client, coffee_id, predictor):
    from promptseg import read_image
    from promptseg.refine import refine_mask

    req = {"box": [220, 120, 380, 280], "multimask_output": False, "mask_format": "rle", "refine": "zoom"}
    res = client.post(f"/v1/images/{coffee_id}/segment", json=req)
    assert res.status_code == 200, res.text
    logits, _, _ = predictor.predict(box=np.array(req["box"]), multimask_output=False, return_logits=True)
    want = refine_mask("zoom", read_image(COFFEE), logits[0], box=np.array(req["box"]), predictor=predictor)
    got = rle_to_mask(res.json()["masks"][0])
    assert (got == want).all() and not (got == (logits[0] > 0)).all()
    again = client.post(f"/v1/images/{coffee_id}/segment", json={**req, "refine": "none"})  # the server's image is back
    plain = rle_to_mask(again.json()["masks"][0])
    assert (plain == (logits[0] > 0)).all()


def test_everything_and_embedding(client, coffee_id, predictor):
    res = client.post(f"/v1/images/{coffee_id}/everything",
                      json={"points_per_side": 8, "pred_iou_thresh": 0.0, "mask_format": "rle"})
    assert res.status_code == 200, res.text
    records = res.json()["records"]
    ref = MaskGenerator(default_model(), points_per_side=8, pred_iou_thresh=0.0).generate(COFFEE)
    assert len(records) == len(ref) > 0
    for rec, r in zip(records, ref):
        assert (rle_to_mask(rec["segmentation"]) == r["segmentation"]).all()
        assert rec["bbox"] == r["bbox"] and set(rec) == set(r)
    emb = client.get(f"/v1/images/{coffee_id}/embedding")
    arr = np.load(io.BytesIO(emb.content))
    np.testing.assert_array_equal(arr, predictor.features.numpy())
    raw = client.get(f"/v1/images/{coffee_id}/embedding", params={"format": "raw"})
    assert raw.headers["x-embedding-shape"] == "1,256,16,16" and raw.headers["x-original-size"] == "400,600"
    np.testing.assert_array_equal(np.frombuffer(raw.content, "<f4").reshape(arr.shape), arr)
    other = client.get(f"/v1/images/{coffee_id}/embedding", params={"level": "high_res_feats_0"})
    assert other.status_code == 422 and "SAM 2's models only" in other.json()["detail"]


BAD_SEGMENTS = [
    ({"point_coords": [[3000, 10]], "point_labels": [1]}, 422, "outside the 600x400 image"),
    ({"point_coords": [[10, 10]], "point_labels": [2]}, 422, "point_labels"),
    ({"point_coords": [[10, 10], [20, 20]], "point_labels": [1]}, 422, "point_labels must have shape"),
    ({"box": [300, 10, 100, 50]}, 422, "empty or inverted"),
    ({}, 422, "no prompt given"),
    ({"point_coords": [[10, 10]], "point_labels": [1], "colour": "red"}, 422, "colour"),
    ({"point_coords": [[10, 10]], "point_labels": [1], "mask_input": "../etc"}, 422, "mask_input"),
    ({"point_coords": [[10, 10]], "point_labels": [1], "mask_input": "0" * 32}, 404, "no logits handle"),
    ({"point_coords": [[1, 1]] * 65, "point_labels": [1] * 65}, 422, "point_coords"),
    ({"box": [1, 2, 3]}, 422, "box"),
    ({"point_coords": [[10, 10]], "point_labels": [1], "mask_format": "gif"}, 422, "mask_format"),
    ({"point_coords": [[10, 10]], "point_labels": [1], "refine": "crf"}, 422, "refine"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_SEGMENTS)
def test_bad_segment_requests(client, coffee_id, body, status, words):
    res = client.post(f"/v1/images/{coffee_id}/segment", json=body)
    assert res.status_code == status, res.text
    assert words in json.dumps(res.json()["detail"])
    assert client.get("/healthz").status_code == 200


def test_bad_requests_of_every_other_kind(server, client, coffee_id):
    assert client.post("/v1/images/" + "f" * 32 + "/segment", json={"box": [1, 1, 5, 5]}).status_code == 404
    assert "upload it" in client.get("/v1/images/nope/embedding").json()["detail"]
    assert client.post(f"/v1/images/{coffee_id}/segment", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    nan = b'{"point_coords": [[NaN, 1]], "point_labels": [1]}'
    assert client.post(f"/v1/images/{coffee_id}/segment", content=nan, headers={"content-type": "application/json"}).status_code == 422
    assert client.post(f"/v1/images/{coffee_id}/everything", json={"points_per_side": 1000}).status_code == 422
    assert client.post(f"/v1/images/{coffee_id}/everything", json={"crop_n_layers": -1}).status_code == 422
    upload = lambda data, name="x.png": client.post("/v1/images", files={"file": (name, data, "image/png")})  # noqa: E731
    res = upload(b"this is not an image")
    assert res.status_code == 415 and "not an image" in res.json()["detail"]
    assert upload(b"").status_code == 400
    assert upload(COFFEE.read_bytes()[:5000]).status_code == 400  # truncated PNG
    big = np.random.default_rng(0).integers(0, 255, (1100, 1100, 3), dtype=np.uint8)
    res = upload(png_bytes(big))  # 1.2 MP over the server's 1 MP bound (and ~3.6 MB over its 2 MiB)
    assert res.status_code == 413
    res = upload(png_bytes(np.zeros((1200, 1000, 3), np.uint8)))  # small file, too many pixels
    assert res.status_code == 413 and "MP" in res.json()["detail"]
    assert client.post("/v1/images", data={"other": "x"}).status_code == 422  # no file field
    # a body without Content-Length (chunked) is refused before it is read
    u = urlparse(server[0])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", f"/v1/images/{coffee_id}/segment", body=iter([b'{"box": [1, 1, 5, 5]}']),
                 headers={"content-type": "application/json"}, encode_chunked=True)
    assert conn.getresponse().status == 411
    conn.close()
    assert client.get("/healthz").status_code == 200  # still serving after all of it


def test_concurrent_clients_share_embeddings_and_memory_stays_bounded(server, client):
    """20 clients, 200 requests: uploads of the same images at once (one embedding each), clicks,
    and enough distinct images to overflow the 64 MiB budget; what does not fit now is refused
    with 503 and Retry-After and goes through when retried; nothing lost, and the server's peak
    memory grows by no more than its budget."""
    url, proc = server
    rng = np.random.default_rng(7)
    shared = [png_bytes(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(2)]
    distinct = [png_bytes(rng.integers(0, 255, (700, 1000, 3), dtype=np.uint8), "JPEG") for _ in range(40)]
    # the model's own working memory at this size is not the budget's: take it before measuring
    warm = client.post("/v1/images", files={"file": ("w", png_bytes(rng.integers(0, 255, (700, 1000, 3), dtype=np.uint8), "JPEG"),
                                                     "image/png")}).json()["id"]
    client.post(f"/v1/images/{warm}/segment", json={"point_coords": [[100, 100]], "point_labels": [1], "refine": "none"})
    before = client.get("/healthz").json()
    rss_before = rss_bytes(proc.pid)
    reset_peak_rss(proc.pid)
    refused = []

    def upload(c: httpx.Client, data: bytes) -> httpx.Response:
        for _ in range(200):
            up = c.post("/v1/images", files={"file": ("img", data, "application/octet-stream")})
            if up.status_code != 503:
                return up
            assert int(up.headers["retry-after"]) > 0 and "memory budget" in up.json()["detail"]
            refused.append(1)
            time.sleep(0.2)  # sooner than Retry-After asks: the test wants it busy
        return up

    start = threading.Barrier(20)
    shared_embeddings = []

    def one_client(k: int) -> list[int]:
        codes = []
        with httpx.Client(base_url=url, timeout=300) as c:
            start.wait()
            for j in range(10):
                if j == 5 and start.wait() == 0:  # every client has uploaded the shared images 5 times
                    shared_embeddings.append(c.get("/healthz").json()["embeddings"] - before["embeddings"])
                data = shared[k % 2] if j < 5 else distinct[(k * 5 + j) % len(distinct)]
                up = upload(c, data)
                codes.append(up.status_code)
                if up.status_code == 200 and j % 2:
                    seg = c.post(f"/v1/images/{up.json()['id']}/segment",
                                 json={"point_coords": [[100 + j, 100]], "point_labels": [1], "refine": "none"})
                    codes.append(seg.status_code if seg.status_code != 404 else 200)  # evicted meanwhile: fine
        return codes

    with ThreadPoolExecutor(20) as pool:
        codes = [c for cs in pool.map(one_client, range(20)) for c in cs]
    assert len(codes) == 300 and set(codes) == {200}
    after = client.get("/healthz").json()
    assert after["cache_bytes"] <= after["cache_budget_bytes"] and after["reserved_bytes"] == 0
    assert shared_embeddings == [2]  # 100 uploads of 2 images at once: each embedded once, not per client
    assert after["embeddings"] - before["embeddings"] <= 2 + 100
    assert refused, "20 clients at once never filled a 64 MiB budget"
    growth = peak_rss_bytes(proc.pid) - rss_before
    print(f"peak RSS growth {growth / 2**20:.0f} MiB over a 64 MiB budget; {len(refused)} uploads refused, then retried")
    assert growth < 64 * 2**20 + 48 * 2**20, growth / 2**20  # the budget, plus the interpreter's own churn


def test_a_crash_inside_a_request_is_a_500_and_the_server_goes_on():
    from fastapi.testclient import TestClient

    from promptseg.server.app import create_app

    app = create_app(default_model())
    with TestClient(app, raise_server_exceptions=False) as c:
        up = c.post("/v1/images", files={"file": ("c.png", COFFEE.read_bytes(), "image/png")}).json()
        import torch

        # a broken entry (an embedding of the wrong shape): the model fails deep inside torch on it
        app.state.cache.get(up["id"]).state.features = torch.zeros(1, 8, 4, 4)
        res = c.post(f"/v1/images/{up['id']}/segment", json={"point_coords": [[10, 10]], "point_labels": [1]})
        assert res.status_code == 500 and "internal error" in res.json()["detail"]
        assert c.get("/healthz").json()["status"] == "ok"


def test_decoder_onnx_decodes_the_served_embedding(client):
    """What the page does in a browser, here with onnxruntime: the served decoder.onnx on the
    served embedding gives the masks and scores of /segment."""
    import onnxruntime as ort

    # uploaded again: the tests before this one may have evicted it from the small cache
    coffee_id = client.post("/v1/images", files={"file": ("coffee.png", COFFEE.read_bytes(), "image/png")}).json()["id"]

    info = client.get("/v1/models").json()[0]
    assert info["browser_decoding"] is False and client.get("/ort/ort.wasm.min.js").status_code == 404
    res = client.get("/v1/decoder.onnx")
    assert res.status_code == 200 and res.headers["content-type"] == "application/octet-stream"
    assert client.get("/v1/decoder.onnx").content == res.content  # exported once
    session = ort.InferenceSession(res.content, providers=["CPUExecutionProvider"])
    raw = client.get(f"/v1/images/{coffee_id}/embedding", params={"format": "raw"})
    assert raw.status_code == 200, raw.text
    emb = np.frombuffer(raw.content, "<f4").reshape([int(v) for v in raw.headers["x-embedding-shape"].split(",")])
    ih, iw = map(int, raw.headers["x-input-size"].split(","))
    h, w = map(int, raw.headers["x-original-size"].split(","))
    mh, mw = info["mask_input_size"]
    for body, coords, labels, picks in [
        ({"point_coords": [[300, 200]], "point_labels": [1], "multimask_output": True},
         [[300, 200], [0, 0]], [1, -1], [1, 2, 3]),
        ({"box": [220, 120, 380, 280], "multimask_output": False}, [[220, 120], [380, 280]], [2, 3], [0]),
    ]:
        pts = np.array([coords], np.float32) * np.array([iw / w, ih / h], np.float32)
        masks, iou, _ = session.run(None, {
            "image_embeddings": emb, "point_coords": pts, "point_labels": np.array([labels], np.float32),
            "mask_input": np.zeros((1, 1, mh, mw), np.float32), "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([h, w], np.float32),
        })
        answer = client.post(f"/v1/images/{coffee_id}/segment", json={**body, "mask_format": "rle", "refine": "none"}).json()
        np.testing.assert_allclose(iou[0, picks], answer["scores"], atol=1e-4)
        for k, rle in zip(picks, answer["masks"]):
            assert ((masks[0, k] > info["mask_threshold"]) == rle_to_mask(rle)).mean() > 0.999


def test_serve_with_flip_answers_as_the_flip_predictor(predictor):
    """`serve --flip`: every answer is the mirror-image average, the same as FlipPredictor's,
    refinement handles and zoom work on it, each image is embedded twice (and counted so in the
    cache), and the page is told to decode on the server."""
    from promptseg import FlipPredictor

    flip = FlipPredictor(Predictor(predictor.model))
    flip.set_image(COFFEE)
    with running_server("--flip", "--cache-mb", "64", "--web-runtime", "off") as (url, _), \
            httpx.Client(base_url=url, timeout=120) as c:
        info = c.get("/v1/models").json()[0]
        assert info["flip"] is True and info["browser_decoding"] is False
        image_id = c.post("/v1/images", files={"file": ("coffee.png", COFFEE.read_bytes(), "image/png")}).json()["id"]
        emb = predictor.features.numel() * 4
        assert c.get("/healthz").json()["cache_bytes"] >= 600 * 400 * 3 + 2 * emb
        req = {"point_coords": [[300, 200]], "point_labels": [1], "refine": "none"}
        body = c.post(f"/v1/images/{image_id}/segment", json=req).json()
        masks, scores, low = flip.predict(np.array(req["point_coords"]), np.array(req["point_labels"]))
        np.testing.assert_allclose(body["scores"], scores, rtol=1e-5, atol=1e-6)
        for rle, mask in zip(body["masks"], masks):
            assert (decode_coco_rle(rle) == mask).mean() > 0.9999
        plain, _, _ = predictor.predict(np.array(req["point_coords"]), np.array(req["point_labels"]))
        assert not all((decode_coco_rle(r) == m).all() for r, m in zip(body["masks"], plain))
        best = body["best"]
        more = {"point_coords": [[300, 200], [450, 330]], "point_labels": [1, 0], "mask_input": body["logits"][best],
                "multimask_output": False, "refine": "none"}
        res = c.post(f"/v1/images/{image_id}/segment", json=more).json()
        want, _, _ = flip.predict(np.array(more["point_coords"]), np.array(more["point_labels"]),
                                  mask_input=low[best][None], multimask_output=False)
        assert (decode_coco_rle(res["masks"][0]) == want[0]).mean() > 0.9999
        zoomed = c.post(f"/v1/images/{image_id}/segment",
                        json={"box": [280, 150, 340, 210], "multimask_output": False, "refine": "zoom"})
        assert zoomed.status_code == 200 and zoomed.json()["areas"][0] > 0
