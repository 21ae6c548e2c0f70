"""Parity with Meta's `sam2` 1.1.0 (built without its CUDA extension) on fully random state dicts
of every SAM 2.1 size, saved as Meta publishes them and loaded through `build_model`: image
features at every level, low-res logits, IoU and object scores, full-size logits and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import PROMPTS as SHARED_PROMPTS
from helpers import agreement, assert_close_scaled, assert_records_match, randomize_
from promptseg import Predictor, build_model

SIZES = ("t", "s", "b+", "l")

PROMPTS = {
    **SHARED_PROMPTS,
    "batched boxes": dict(box=np.array([[150.0, 60.0, 470.0, 380.0], [20.0, 30.0, 250.0, 200.0],
                                        [300.0, 100.0, 590.0, 390.0]])),
}


def reference_sam2(size: str, checkpoint=None):
    from sam2.build_sam import build_sam2

    return build_sam2(f"configs/sam2.1/sam2.1_hiera_{size}.yaml", checkpoint, device="cpu", mode="eval")


@pytest.fixture(scope="module")
def sam2_checkpoints(tmp_path_factory):
    """A fully random state dict of each size, saved as Meta's `.pt` files are ({"model": ...})."""
    folder = tmp_path_factory.mktemp("sam2")
    paths = {}
    for i, size in enumerate(SIZES):
        sd = randomize_(reference_sam2(size), seed=20 + i).state_dict()
        paths[size] = folder / f"random_sam2.1_hiera_{size}.pt"
        torch.save({"model": sd}, paths[size])
    return paths


@pytest.fixture(scope="module", params=SIZES)
def predictors(request, sam2_checkpoints, photo):
    """(reference predictor, ours) for one size, the photo embedded by both; pytest runs one
    size's tests together, so each size is built and embedded once."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    size = request.param
    ref = SAM2ImagePredictor(reference_sam2(size, str(sam2_checkpoints[size])))
    ref.set_image(photo)
    ours = Predictor(build_model(checkpoint=sam2_checkpoints[size]))
    ours.set_image(photo)
    return ref, ours


def _compare(ref, ours, kwargs, multimask):
    r_masks, r_scores, r_low = ref.predict(**kwargs, multimask_output=multimask)
    o_masks, o_scores, o_low = ours.predict(**kwargs, multimask_output=multimask)
    assert o_masks.shape == r_masks.shape and o_masks.dtype == bool
    assert_close_scaled(torch.from_numpy(o_low), torch.from_numpy(r_low))
    assert_close_scaled(torch.from_numpy(o_scores), torch.from_numpy(r_scores))
    assert agreement(o_masks, r_masks.astype(bool)) >= 0.9999
    r_logits = ref.predict(**kwargs, multimask_output=multimask, return_logits=True)[0]
    o_logits = ours.predict(**kwargs, multimask_output=multimask, return_logits=True)[0]
    assert_close_scaled(torch.from_numpy(o_logits), torch.from_numpy(r_logits))
    return r_low, r_scores


@pytest.mark.slow
def test_types_detected_and_features_match(predictors):
    ref, ours = predictors
    size = ours.model_type.rsplit("_", 1)[1]
    assert ours.model_type == f"sam2.1_hiera_{size}"
    assert ours.features.shape == (1, 256, 64, 64)
    assert_close_scaled(ours.features, ref._features["image_embed"])
    assert [tuple(f.shape) for f in ours.image_state.high_res] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    for a, b in zip(ours.image_state.high_res, ref._features["high_res_feats"]):
        assert_close_scaled(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_prompts_match(predictors, prompt, multimask):
    _compare(*predictors, PROMPTS[prompt], multimask)


@pytest.mark.slow
def test_mask_input_and_object_scores_match(predictors):
    ref, ours = predictors
    kwargs = PROMPTS["points with negatives"]
    low, scores = _compare(ref, ours, PROMPTS["one point"], True)
    mask_input = low[int(np.argmax(scores))][None]
    for multimask in (True, False):
        _compare(ref, ours, dict(**kwargs, mask_input=mask_input), multimask)
    # object scores, from the decoders as the reference predictor calls its own
    ours_obj = ours.predict_low_res(**kwargs).object_scores
    coords = torch.as_tensor(ref._transforms.transform_coords(
        torch.as_tensor(kwargs["point_coords"], dtype=torch.float), normalize=True, orig_hw=ref._orig_hw[0]))
    with torch.inference_mode():
        sparse, dense = ref.model.sam_prompt_encoder(
            points=(coords[None], torch.as_tensor(kwargs["point_labels"])[None]), boxes=None, masks=None)
        *_, ref_obj = ref.model.sam_mask_decoder(
            image_embeddings=ref._features["image_embed"], image_pe=ref.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            repeat_image=False, high_res_features=ref._features["high_res_feats"])
    assert ours_obj.shape == (1, 1)
    assert_close_scaled(ours_obj, ref_obj)


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_single_mask_fallback_both_ways(predictors, threshold):
    """Asked for one mask: with the stability threshold at 0 every single-mask answer is kept,
    above 1 every prompt falls back to its best multimask candidate; both as the reference."""
    ref, ours = predictors
    decoder = ours.model.mask_decoder
    kept = decoder.dynamic_multimask
    ref_kept = ref.model.sam_mask_decoder.dynamic_multimask_stability_thresh
    try:
        decoder.dynamic_multimask = (kept[0], threshold)
        ref.model.sam_mask_decoder.dynamic_multimask_stability_thresh = threshold
        for name in ("one point", "batched boxes"):
            _compare(ref, ours, PROMPTS[name], False)
        _, single, _ = ours.predict(**PROMPTS["one point"], multimask_output=False)
        _, multi, _ = ours.predict(**PROMPTS["one point"], multimask_output=True)
        if threshold > 1:
            assert single[0] == pytest.approx(multi.max())
    finally:
        decoder.dynamic_multimask = kept
        ref.model.sam_mask_decoder.dynamic_multimask_stability_thresh = ref_kept


@pytest.mark.slow
def test_image_batch_and_saved_embedding_match(sam2_checkpoints, photo, tmp_path):
    """set_image_batch / predict_batch as the reference's, on the smallest size; an embedding saved
    and loaded carries every level."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref = SAM2ImagePredictor(reference_sam2("t", str(sam2_checkpoints["t"])))
    ours = Predictor(build_model(checkpoint=sam2_checkpoints["t"]))
    images = [photo, np.ascontiguousarray(photo[40:300, 100:520])]
    ref.set_image_batch(images)
    ours.set_image_batch(images)
    boxes = [np.array([150.0, 60.0, 470.0, 380.0]), np.array([10.0, 20.0, 300.0, 200.0])]
    r_masks, r_scores, r_low = ref.predict_batch(box_batch=boxes, multimask_output=True)
    o = ours.predict_batch([dict(box=b, multimask_output=True) for b in boxes])
    for i in range(2):
        assert_close_scaled(torch.from_numpy(o[i][2]), torch.from_numpy(r_low[i]))
        assert_close_scaled(torch.from_numpy(o[i][1]), torch.from_numpy(r_scores[i]))
        assert agreement(o[i][0], r_masks[i].astype(bool)) >= 0.9999
    # the second image alone, its embedding saved and loaded: the same answer, no encoder run
    ours.set_image(images[1])
    before = ours.predict(box=boxes[1])
    np.testing.assert_allclose(before[2], o[1][2][None][0], rtol=1e-5, atol=1e-4)
    path = tmp_path / "emb.safetensors"
    ours.save_embedding(path)
    fresh = Predictor(build_model(checkpoint=sam2_checkpoints["t"]))
    fresh.load_embedding(path)
    after = fresh.predict(box=boxes[1])
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def generator_models(tmp_path_factory):
    """(reference, ours) Hiera-T models for the automatic mask generator. Random heads predict
    IoUs near 0.5 and small logits, which SAM 2's default filters (IoU 0.8, stability 0.95)
    would all drop; a shifted IoU bias and larger hypernetwork outputs make them keep about a
    third of the candidates, so both filters decide."""
    sd = randomize_(reference_sam2("t"), seed=20).state_dict()
    sd["sam_mask_decoder.iou_prediction_head.layers.2.bias"] += 1.5
    for i in range(4):
        sd[f"sam_mask_decoder.output_hypernetworks_mlps.{i}.layers.2.weight"] *= 6.0
    path = tmp_path_factory.mktemp("sam2_amg") / "sam2.1_hiera_t_shifted.pt"
    torch.save({"model": sd}, path)
    return reference_sam2("t", str(path)), build_model(checkpoint=path)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"use_m2m": True}, {"multimask_output": False}],
                         ids=["defaults", "use_m2m", "single mask"])
def test_automatic_mask_generator_matches(generator_models, photo, options):
    """SAM 2's generator with its default thresholds on a 6x6 grid, 4x4 with options (the
    reference brings every candidate to full size, so a larger grid costs minutes). Box NMS is off: these random masks'
    boxes all span the image, and NMS would keep one; promptseg's NMS is the one SAM 1's parity
    tests check."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Reference

    from promptseg.compat import SAM2AutomaticMaskGenerator

    side = 6 if not options else 4  # the options' runs cost the reference more: a smaller grid
    kwargs = dict(points_per_side=side, output_mode="uncompressed_rle", box_nms_thresh=1.0, **options)
    ref = Reference(generator_models[0], **kwargs).generate(photo)
    ours = SAM2AutomaticMaskGenerator(generator_models[1], **kwargs).generate(photo)
    candidates = side * side * (1 if options.get("multimask_output") is False else 3)
    assert 0 < len(ref) < candidates  # the filters kept some and dropped some
    assert_records_match(ref, ours, stability_thresh=0.95)
