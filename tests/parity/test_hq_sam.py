"""HQ-SAM against its own package (`segment-anything-hq`) on the same fully random state dicts
and a real photo: the checkpoint as published (a plain state dict .pth) loads and is detected,
and every prompt's one mask (SAM's plus the HQ token's, or the HQ token's alone), everything
mode's masks, the ONNX graphs, the CLI and the server agree with it."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from helpers import PROMPTS, agreement, assert_close_scaled, assert_records_match, randomize_, run
from promptseg import MaskGenerator, Predictor, build_model, sample_image_path
from promptseg.model import ViTConfig

sam_hq = pytest.importorskip("segment_anything_hq", reason="segment-anything-hq is installed in the test venv")

# a small ViT whose first global block (1) is not its last, so the early tokens are its own
SMALL_HQ = ViTConfig(embed_dim=96, depth=3, num_heads=4, global_attn_indexes=(1,), hq=True)


@pytest.fixture(scope="module")
def tiny_hq_pair(tmp_path_factory):
    ref = randomize_(sam_hq.sam_model_registry["vit_tiny"](), seed=13).eval()
    path = tmp_path_factory.mktemp("hq") / "sam_hq_vit_tiny.pth"
    torch.save(ref.state_dict(), path)  # as HQ-SAM publishes its weights
    ours = build_model(checkpoint=path)
    assert ours.model_type == "vit_tiny_hq" and ours.hq
    return ref, ours, path


@pytest.fixture(scope="module")
def tiny_hq_predictors(tiny_hq_pair, photo):
    ref = sam_hq.SamPredictor(tiny_hq_pair[0])
    ref.set_image(photo)
    ours = Predictor(tiny_hq_pair[1])
    ours.set_image(photo)
    return ref, ours


def test_hq_embedding_matches(tiny_hq_predictors):
    ref, ours = tiny_hq_predictors
    assert_close_scaled(ours.features, ref.features)
    (hq,) = ours.image_state.high_res
    assert hq.shape == (1, 32, 256, 256)
    decoder = ref.model.mask_decoder
    with torch.no_grad():
        expected = decoder.embedding_encoder(ref.features) + decoder.compress_vit_feat(
            ref.interm_features[0].permute(0, 3, 1, 2))
    assert_close_scaled(hq, expected)


@pytest.mark.parametrize("hq_token_only", [False, True])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_hq_prompts_match(tiny_hq_predictors, prompt, multimask, hq_token_only):
    ref, ours = tiny_hq_predictors
    kwargs = dict(**PROMPTS[prompt], multimask_output=multimask, hq_token_only=hq_token_only)
    r_masks, r_scores, r_low = ref.predict(**kwargs)
    o_masks, o_scores, o_low = ours.predict(**kwargs)
    assert o_masks.shape == r_masks.shape == (1, 400, 600)
    assert_close_scaled(torch.from_numpy(o_low), torch.from_numpy(r_low))
    assert_close_scaled(torch.from_numpy(o_scores), torch.from_numpy(r_scores))
    assert agreement(o_masks, r_masks) >= 0.9999


def test_hq_batched_boxes_match(tiny_hq_predictors):
    ref, ours = tiny_hq_predictors
    boxes = np.array([[150.0, 60.0, 470.0, 380.0], [20.0, 30.0, 200.0, 250.0], [300, 100, 590, 390]])
    r_masks, r_scores, r_low = ref.predict_torch(None, None, ref.transform.apply_boxes_torch(
        torch.as_tensor(boxes, dtype=torch.float), ref.original_size), multimask_output=False)
    o_masks, o_scores, o_low = ours.predict(box=boxes, multimask_output=False)
    assert_close_scaled(torch.from_numpy(o_low), r_low)
    assert agreement(o_masks, r_masks.numpy()) >= 0.9999


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_hq_everything_matches(tiny_hq_pair, photo, hq_token_only):
    kwargs = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                  output_mode="uncompressed_rle")
    ref_gen = sam_hq.SamAutomaticMaskGenerator(tiny_hq_pair[0], **kwargs)
    if hq_token_only:  # its generator has no such option: its predictor's default, set for this run
        ref_gen.predictor.predict_torch = partial(ref_gen.predictor.predict_torch, hq_token_only=True)
    ref = ref_gen.generate(photo)
    ours = MaskGenerator(Predictor(tiny_hq_pair[1]), hq_token_only=hq_token_only, **kwargs).generate(photo)
    assert len(ref) == 36  # one mask per click
    assert_records_match(ref, ours)


def test_small_vit_hq_reads_the_first_global_blocks_tokens(photo):
    """A ViT HQ-SAM (the encoder's early tokens come from its first global-attention block)."""
    from segment_anything_hq.modeling import ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam, TwoWayTransformer

    cfg = SMALL_HQ
    ref = Sam(
        image_encoder=ImageEncoderViT(depth=cfg.depth, embed_dim=cfg.embed_dim, img_size=1024, mlp_ratio=4,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=cfg.num_heads,
                                      patch_size=16, qkv_bias=True, use_rel_pos=True,
                                      global_attn_indexes=list(cfg.global_attn_indexes), window_size=14, out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoderHQ(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3,
                                   iou_head_hidden_dim=256, vit_dim=cfg.embed_dim,
                                   transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)),
    )
    randomize_(ref, seed=5).eval()
    ours = cfg.build()
    ours.load_state_dict(ref.state_dict())
    r, o = sam_hq.SamPredictor(ref), Predictor(ours.eval())
    r.set_image(photo)
    o.set_image(photo)
    for multimask in (True, False):
        r_masks, r_scores, r_low = r.predict(**PROMPTS["points with negatives"], multimask_output=multimask)
        o_masks, o_scores, o_low = o.predict(**PROMPTS["points with negatives"], multimask_output=multimask)
        assert_close_scaled(torch.from_numpy(o_low), torch.from_numpy(r_low))
        assert agreement(o_masks, r_masks) >= 0.9999


def test_hq_token_only_is_refused_without_an_hq_token(small_predictor):
    with pytest.raises(ValueError, match="HQ-SAM models"):
        small_predictor.predict(**PROMPTS["box"], hq_token_only=True)
    with pytest.raises(ValueError, match="HQ-SAM models"):
        MaskGenerator(small_predictor, hq_token_only=True)
    with pytest.raises(ValueError, match="hq_token_only must be"):
        small_predictor.predict(**PROMPTS["box"], hq_token_only="yes")


def test_hq_embedding_saved_and_loaded(tiny_hq_predictors, tiny_hq_pair, tmp_path):
    _, ours = tiny_hq_predictors
    ours.save_embedding(tmp_path / "e.safetensors")
    other = Predictor(tiny_hq_pair[1])
    other.load_embedding(tmp_path / "e.safetensors")
    a = ours.predict(**PROMPTS["box"], hq_token_only=True)
    b = other.predict(**PROMPTS["box"], hq_token_only=True)
    np.testing.assert_array_equal(a[2], b[2])
    mobile = Predictor(build_model("vit_t"))  # the same embedding shape, no HQ features
    with pytest.raises(ValueError, match="made by vit_tiny_hq"):
        mobile.load_embedding(tmp_path / "e.safetensors")


def test_hq_through_onnx(tiny_hq_predictors, photo, tmp_path):
    """HQ-SAM's ONNX graphs (the encoder gives the HQ features; the decoder the HQ token's mask
    beside SAM's four) answer as the torch model does, for every option."""
    from promptseg.export.exporter import export_model
    from promptseg.predict import OnnxPredictor

    _, ours = tiny_hq_predictors
    export_model(ours.model, tmp_path)
    onnx = OnnxPredictor(tmp_path)
    onnx.set_image(photo)
    assert onnx.hq
    for prompt in PROMPTS.values():
        for multimask in (True, False):
            for only in (False, True):
                m1, s1, l1 = ours.predict(**prompt, multimask_output=multimask, hq_token_only=only)
                m2, s2, l2 = onnx.predict(**prompt, multimask_output=multimask, hq_token_only=only)
                assert_close_scaled(torch.from_numpy(l2), torch.from_numpy(l1))
                np.testing.assert_allclose(s2, s1, rtol=1e-4, atol=1e-5)
                assert agreement(m1, m2) >= 0.9999
    points = np.array([[100.0, 100.0], [300.0, 200.0], [500.0, 300.0]])
    low_t, iou_t = ours.decode_points(ours.image_state, points)
    low_o, iou_o = onnx.decode_points(onnx.image_state, points)
    assert low_o.shape == (3, 1, 256, 256)
    assert_close_scaled(torch.from_numpy(low_o), low_t)
    # an embedding made elsewhere: the HQ features come with it
    again = OnnxPredictor(tmp_path)
    with pytest.raises(ValueError, match="HQ features"):
        again.set_embedding(onnx.features, (400, 600))
    again.set_embedding(onnx.features, (400, 600), high_res=onnx.image_state.high_res)
    np.testing.assert_array_equal(again.predict(**PROMPTS["box"])[2], onnx.predict(**PROMPTS["box"])[2])


def test_hq_download_then_cli(tiny_hq_pair, tmp_path):
    """`promptseg download vit_tiny_hq` from a mirror (a server on 127.0.0.1), then `segment` and
    `everything` with `--model vit_tiny_hq --hq-token-only`, answering as the predictor does."""
    import json

    from promptseg.io import read_image
    from promptseg.masks import decode_coco_rle
    from server_helpers import FileServer

    payload = tiny_hq_pair[2].read_bytes()
    env = {"PROMPTSEG_HOME": str(tmp_path / "cache")}
    with FileServer(payload, name="sam_hq_vit_tiny.pth") as server:
        out = run("download", "vit_tiny_hq", "--url", server.url, "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cache" / "sam_hq_vit_tiny.pth").read_bytes() == payload
    image = sample_image_path("coffee")
    out = run("segment", image, "--box", "150,60,470,380", "--model", "vit_tiny_hq", "--hq-token-only", "--json",
              "-o", tmp_path / "m.png", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"] == "vit_tiny_hq"
    predictor = Predictor(tiny_hq_pair[1])
    predictor.set_image(image)
    expected = predictor.predict(box=PROMPTS["box"]["box"], hq_token_only=True)[0][0]
    assert agreement(read_image(tmp_path / "m.png")[..., 0] > 127, expected) >= 0.9999
    out = run("everything", image, "-o", tmp_path / "all", "--model", "vit_tiny_hq", "--hq-token-only",
              "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    records = json.loads(next((tmp_path / "all").glob("*.json")).read_text())["annotations"]
    ours = MaskGenerator(predictor, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                         hq_token_only=True, output_mode="coco_rle").generate(image)
    assert len(records) == len(ours) > 0
    for a, b in zip(sorted(records, key=lambda r: r["bbox"]), sorted(ours, key=lambda r: r["bbox"])):
        assert agreement(decode_coco_rle(a["segmentation"]), decode_coco_rle(b["segmentation"])) >= 0.9999
    out = run("segment", image, "--box", "150,60,470,380", "--hq-token-only", "-o", tmp_path / "d.png", env=env)
    assert out.returncode != 0 and "HQ-SAM models" in out.stderr and "Traceback" not in out.stderr


def test_server_answers_with_an_hq_model(tiny_hq_pair):
    import httpx

    from promptseg.masks import decode_coco_rle
    from server_helpers import running_server

    image = sample_image_path("coffee.png")
    predictor = Predictor(tiny_hq_pair[1])
    predictor.set_image(image)
    with running_server("--checkpoint", str(tiny_hq_pair[2]), "--web-runtime", "off") as (url, _), \
            httpx.Client(base_url=url, timeout=120) as client:
        info = client.get("/v1/models").json()[0]
        assert info["name"] == "vit_tiny_hq" and info["hq"] is True and info["browser_decoding"] is False
        with open(image, "rb") as f:
            image_id = client.post("/v1/images", files={"file": ("coffee.png", f, "image/png")}).json()["id"]
        for only in (False, True):
            req = {"point_coords": [[300, 200]], "point_labels": [1], "refine": "none", "hq_token_only": only}
            body = client.post(f"/v1/images/{image_id}/segment", json=req).json()
            masks, scores, _ = predictor.predict(np.array([[300, 200]]), np.array([1]), hq_token_only=only)
            assert len(body["masks"]) == 1
            np.testing.assert_allclose(body["scores"], scores, rtol=1e-5, atol=1e-6)
            assert agreement(decode_coco_rle(body["masks"][0]), masks[0]) >= 0.9999
        bad = client.post(f"/v1/images/{image_id}/segment", json={"box": [1, 2, 3, 4], "hq_token_only": "yes"})
        assert bad.status_code == 422
        everything = client.post(f"/v1/images/{image_id}/everything",
                                 json={"points_per_side": 3, "hq_token_only": True, "pred_iou_thresh": 0,
                                       "stability_score_thresh": 0})
        assert everything.status_code == 200, everything.text
        assert 0 < len(everything.json()["records"]) <= 9


def test_hq_samples_scripts_run_on_the_compat_names(tiny_hq_pair, tiny_hq_predictors):
    """segment_anything_hq's names: its registry key `vit_tiny` builds vit_tiny_hq from the file."""
    from promptseg.compat.hq import SamPredictor, sam_model_registry

    ref, _ = tiny_hq_predictors
    predictor = SamPredictor(sam_model_registry["vit_tiny"](checkpoint=tiny_hq_pair[2]))
    predictor.set_image(sample_image_path("coffee"))
    r = ref.predict(**PROMPTS["box"], hq_token_only=True)
    o = predictor.predict(**PROMPTS["box"], hq_token_only=True)
    assert_close_scaled(torch.from_numpy(o[2]), torch.from_numpy(r[2]))
