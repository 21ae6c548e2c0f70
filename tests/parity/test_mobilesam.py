"""MobileSAM (`vit_t`, TinyViT encoder) against its own package (`mobilesam-mirror`'s
`mobile_sam`) on the same fully random state dict and a real photo: the checkpoint as published
(a plain state dict .pt) loads and is detected, and embeddings, prompts' answers and everything
mode's masks agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import PROMPTS, agreement, assert_close_scaled, assert_records_match, randomize_
from promptseg import MaskGenerator, Predictor, build_model

mobile_sam = pytest.importorskip("mobile_sam", reason="mobilesam-mirror is installed in the test venv (make test)")


@pytest.fixture(scope="module")
def mobile_pair(tmp_path_factory):
    ref = randomize_(mobile_sam.sam_model_registry["vit_t"](), seed=11).eval()
    path = tmp_path_factory.mktemp("mobilesam") / "mobile_sam.pt"
    torch.save(ref.state_dict(), path)  # as MobileSAM publishes its weights
    ours = build_model(checkpoint=path)
    assert ours.model_type == "vit_t"
    return ref, ours


@pytest.fixture(scope="module")
def mobile_predictors(mobile_pair, photo):
    ref = mobile_sam.SamPredictor(mobile_pair[0])
    ref.set_image(photo)
    ours = Predictor(mobile_pair[1])
    ours.set_image(photo)
    return ref, ours


def test_mobilesam_embedding_matches(mobile_predictors):
    ref, ours = mobile_predictors
    assert ours.features.shape == (1, 256, 64, 64)
    assert_close_scaled(ours.features, ref.features)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_mobilesam_prompts_match(mobile_predictors, prompt, multimask):
    ref, ours = mobile_predictors
    r_masks, r_scores, r_low = ref.predict(**PROMPTS[prompt], multimask_output=multimask)
    o_masks, o_scores, o_low = ours.predict(**PROMPTS[prompt], multimask_output=multimask)
    assert_close_scaled(torch.from_numpy(o_low), torch.from_numpy(r_low))
    assert_close_scaled(torch.from_numpy(o_scores), torch.from_numpy(r_scores))
    assert agreement(o_masks, r_masks) >= 0.9999


def test_mobilesam_everything_matches(mobile_pair, photo):
    kwargs = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                  output_mode="uncompressed_rle")
    ref = mobile_sam.SamAutomaticMaskGenerator(mobile_pair[0], **kwargs).generate(photo)
    ours = MaskGenerator(Predictor(mobile_pair[1]), **kwargs).generate(photo)
    assert len(ref) > 20
    assert_records_match(ref, ours)


def test_tinyvit_is_mobilesams_size():
    model = build_model("vit_t")
    encoder = sum(p.numel() for n, p in model.image_encoder.named_parameters() if not n.startswith(("head.", "norm_head.")))
    assert 5.5e6 < encoder < 6.0e6  # TinyViT-5M and SAM's neck
    assert np.isclose(sum(p.numel() for p in model.parameters()) / 1e6, 10.13, atol=0.05)


def test_download_then_use_by_name(mobile_pair, tmp_path):
    """`promptseg download vit_t` from a mirror (a server on 127.0.0.1), then `--model vit_t`."""
    import io

    from helpers import run
    from promptseg import sample_image_path
    from server_helpers import FileServer

    buf = io.BytesIO()
    torch.save(mobile_pair[0].state_dict(), buf)
    env = {"PROMPTSEG_HOME": str(tmp_path / "cache")}
    with FileServer(buf.getvalue(), name="mobile_sam.pt") as server:
        out = run("download", "vit_t", "--url", server.url, "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cache" / "mobile_sam.pt").read_bytes() == buf.getvalue()
    out = run("segment", sample_image_path("coffee"), "--point", "300,200", "--model", "vit_t", "--json",
              "-o", tmp_path / "m.png", env=env)
    assert out.returncode == 0, out.stderr
    assert '"model": "vit_t"' in out.stdout


def test_mobilesam_through_onnx(mobile_predictors, photo, tmp_path):
    """The ONNX graphs of vit_t (its encoder too) answer as the torch model does."""
    from promptseg.export.exporter import export_model
    from promptseg.predict import OnnxPredictor

    _, ours = mobile_predictors
    export_model(ours.model, tmp_path)
    onnx = OnnxPredictor(tmp_path)
    onnx.set_image(photo)
    for prompt in PROMPTS.values():
        m1, s1, l1 = ours.predict(**prompt)
        m2, s2, l2 = onnx.predict(**prompt)
        assert_close_scaled(torch.from_numpy(l2), torch.from_numpy(l1))
        assert agreement(m1, m2) >= 0.9999

