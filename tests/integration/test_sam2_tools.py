"""SAM 2 checkpoints through the `promptseg` command and the server, as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import agreement, run
from promptseg import read_image, sample_image_path


def test_segment_with_a_meta_sam2_checkpoint_gives_the_references_mask(tmp_path, sam2_t_checkpoint):
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    path = sam2_t_checkpoint[1]
    image = sample_image_path("coffee.png")
    out = run("segment", image, "--point", "300,200", "--point", "120,80,0", "--checkpoint", path,
              "--refine", "none", "-o", tmp_path / "m.png", "--json")
    assert out.returncode == 0, out.stderr
    assert "skipped 160 weights of SAM 2's video model" in out.stderr
    ours = np.array(Image.open(tmp_path / "m.png")) > 0
    ref = SAM2ImagePredictor(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", str(path), device="cpu"))
    ref.set_image(read_image(image))
    # two clicks ask for one mask: SAM 2's single-mask answer (with its fallback)
    masks, scores, _ = ref.predict(np.array([[300.0, 200.0], [120.0, 80.0]]), np.array([1, 0]),
                                   multimask_output=False)
    assert agreement(ours, masks[0].astype(bool)) >= 0.9999
    summary = json.loads(out.stdout)
    assert summary["model"] == "sam2.1_hiera_t"
    assert summary["masks"][0]["score"] == pytest.approx(float(scores[0]), abs=1e-4)


def test_everything_with_sam2_options(tmp_path, sam2_t_checkpoint):
    from promptseg import build_model
    from promptseg.everything import MaskGenerator

    path = sam2_t_checkpoint[1]
    image = sample_image_path("coffee.png")
    args = ("--points-per-side", 4, "--pred-iou-thresh", 0, "--stability-score-thresh", 0, "--box-nms-thresh", 1)
    out = run("everything", image, "--checkpoint", path, "-o", tmp_path / "out", "--m2m", "--single-mask",
              "--no-overlay", "-q", *args)
    assert out.returncode == 0, out.stderr
    records = json.loads((tmp_path / "out" / "coffee.json").read_text())["annotations"]
    expected = MaskGenerator(build_model(checkpoint=path), points_per_side=4, pred_iou_thresh=0,
                             stability_score_thresh=0, box_nms_thresh=1, use_m2m=True,
                             multimask_output=False).generate(read_image(image))
    assert len(records) == len(expected) == 16  # one mask per click, none filtered
    assert sorted(r["area"] for r in records) == sorted(r["area"] for r in expected)


def test_server_answers_with_a_sam2_model(sam2_t_checkpoint):
    import httpx

    from promptseg import Predictor, build_model
    from promptseg.masks import decode_coco_rle
    from server_helpers import running_server

    path = sam2_t_checkpoint[1]
    image = sample_image_path("coffee.png")
    predictor = Predictor(build_model(checkpoint=path))
    predictor.set_image(image)
    with running_server("--checkpoint", str(path), "--web-runtime", "off") as (url, _), \
            httpx.Client(base_url=url, timeout=120) as client:
        model = client.get("/v1/models").json()[0]
        assert model["name"] == "sam2.1_hiera_t" and model["browser_decoding"] is False
        assert model["generator_defaults"] == {"pred_iou_thresh": 0.8, "stability_score_thresh": 0.95}
        with open(image, "rb") as f:
            image_id = client.post("/v1/images", files={"file": ("coffee.png", f, "image/png")}).json()["id"]
        req = {"point_coords": [[300, 200], [120, 80]], "point_labels": [1, 0], "refine": "none"}
        body = client.post(f"/v1/images/{image_id}/segment", json=req).json()
        masks, scores, _ = predictor.predict(np.array(req["point_coords"]), np.array(req["point_labels"]))
        np.testing.assert_allclose(body["scores"], scores, rtol=1e-5, atol=1e-6)
        for rle, mask in zip(body["masks"], masks):
            assert agreement(decode_coco_rle(rle), mask) >= 0.9999
        everything = client.post(f"/v1/images/{image_id}/everything", json={"points_per_side": 4})
        assert everything.status_code == 200, everything.text
        # a client that decodes itself: decoder.onnx and the three embedding levels it reads
        assert model["embedding_levels"] == ["image_embeddings", "high_res_feats_0", "high_res_feats_1"]
        res = client.get("/v1/decoder.onnx")
        assert res.status_code == 200, res.text
        feeds = {}
        for level in model["embedding_levels"]:
            got = client.get(f"/v1/images/{image_id}/embedding", params={"level": level, "format": "raw"})
            assert got.status_code == 200, got.text
            shape = [int(v) for v in got.headers["x-embedding-shape"].split(",")]
            feeds[level] = np.frombuffer(got.content, "<f4").reshape(shape)
        assert [f.shape for f in feeds.values()] == [(1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128)]
        import onnxruntime as ort

        session = ort.InferenceSession(res.content, providers=["CPUExecutionProvider"])
        h, w = predictor.original_size
        points = predictor.transform.apply_coords(np.array(req["point_coords"], float), (h, w))
        feeds.update(point_coords=np.concatenate([points, [[0, 0]]])[None].astype(np.float32),
                     point_labels=np.array([[1, 0, -1]], np.float32), mask_input=np.zeros((1, 1, 256, 256), np.float32),
                     has_mask_input=np.zeros(1, np.float32), orig_im_size=np.array([h, w], np.float32))
        client_masks, client_iou = session.run(["masks", "iou_predictions"], feeds)
        np.testing.assert_allclose(client_iou[0, 1:], scores, rtol=1e-4, atol=1e-5)
        assert agreement(client_masks[0, 1:] > 0, masks) >= 0.9999
