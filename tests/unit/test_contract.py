"""The predictor contract, the weights registry and the settings that travel with weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import run
from promptseg import MaskGenerator, sample_image_path
from promptseg.checkpoints import build_model, default_checkpoint, load_model, save_weights, weights_settings
from promptseg.predict import FlipPredictor, ImageState, Predictor, as_predictor, is_predictor, load_predictor
from promptseg.weights import DEFAULT_WEIGHTS, REGISTRY, SAM_SETTINGS, WeightsSettings, resolve


@pytest.fixture(scope="module")
def tiny():
    return load_model()


def test_registry_names_resolve_to_rows():
    assert resolve(None).name == DEFAULT_WEIGHTS == "tiny.synth_bsds500"
    assert resolve("tiny") is resolve("tiny.synth_bsds500") and resolve("tiny").bundled
    assert resolve("vit_b") is REGISTRY["vit_b.sa1b"] and resolve("vit_b").url.endswith("sam_vit_b_01ec64.pth")
    assert all(e.settings == SAM_SETTINGS for e in REGISTRY.values() if e.architecture.startswith("vit_"))
    with pytest.raises(ValueError, match="unknown model 'vit_x'.*vit_b.sa1b"):
        resolve("vit_x")


def test_bundled_weights_carry_their_settings(tiny, tmp_path):
    # the file's own metadata holds the settings chosen for it, the same as its registry row
    assert weights_settings(default_checkpoint()) == resolve(DEFAULT_WEIGHTS).settings
    assert tiny.weights_settings.refine == "grabcut" and tiny.weights_settings.pred_iou_thresh == 0.5
    # saved weights keep them; a file without them gets SAM's through the predictor
    save_weights(tiny, tmp_path / "copy.safetensors")
    assert build_model(checkpoint=tmp_path / "copy.safetensors").weights_settings == tiny.weights_settings
    bare = build_model("tiny")
    assert bare.weights_settings is None and Predictor(bare).settings == SAM_SETTINGS
    assert WeightsSettings.from_metadata(SAM_SETTINGS.to_metadata()) == SAM_SETTINGS
    with pytest.raises(ValueError, match="not valid settings"):
        WeightsSettings.from_metadata('{"colour": 1}')


def test_every_predictor_keeps_the_contract(tiny):
    photo = np.asarray(Image.open(sample_image_path("coffee.png")).convert("RGB"))
    plain, flip = load_predictor(tiny), load_predictor(tiny, flip=True)
    assert isinstance(plain, Predictor) and isinstance(flip, FlipPredictor)
    assert is_predictor(plain) and is_predictor(flip) and not is_predictor(tiny)
    assert as_predictor(plain) is plain and isinstance(as_predictor(tiny), Predictor)
    with pytest.raises(TypeError, match="Sam model or a predictor"):
        as_predictor("tiny")
    states = {}
    for predictor in (plain, flip):
        with pytest.raises(ValueError, match="no image is set"):
            predictor.image_state  # noqa: B018
        predictor.set_image(photo)
        state = states[predictor is flip] = predictor.image_state
        assert isinstance(state, ImageState) and state.original_size == photo.shape[:2]
        assert (state.mirror is not None) == (predictor is flip)
        # predict is predict_low_res brought to full size
        low, iou, same, batched = predictor.predict_low_res(np.array([[290, 150]]), np.array([1]))[:4]
        assert same is state and not batched
        masks, scores, _ = predictor.predict(np.array([[290, 150]]), np.array([1]), return_logits=True)
        assert np.allclose(np.asarray(iou)[0], scores, atol=1e-6)
        if predictor is plain:
            assert np.array_equal(predictor.postprocess(low, state, True)[0], masks)
        # everything mode takes either without knowing which
        records = MaskGenerator(predictor, points_per_side=4).generate(photo, image_state=state)
        assert all(r["segmentation"].shape == photo.shape[:2] for r in records)
    # a plain state cannot stand in for a mirrored pair
    with pytest.raises(ValueError, match="no mirror image"):
        flip.image_state = states[False]


def test_load_predictor_names_what_is_wrong():
    with pytest.raises(ValueError, match="backend must be one of"):
        load_predictor(backend="tensorrt")
    with pytest.raises(ValueError, match="tiny_s8 has no bundled or official weights"):
        load_predictor("tiny_s8")
    with pytest.raises(FileNotFoundError, match="promptseg download vit_b.sa1b"):
        load_predictor("vit_b")


def test_segment_refines_by_default_with_the_bundled_model(tmp_path, tiny):
    """The bundled weights' registry row makes GrabCut refinement their default for final
    answers; `--refine none` gives the model's own answer, and Meta's weights refine nothing."""
    photo = sample_image_path("coffee.png")
    default = run("segment", photo, "-p", "290,150", "-o", tmp_path / "a.png", "--json")
    off = run("segment", photo, "-p", "290,150", "--refine", "none", "-o", tmp_path / "b.png", "--json")
    assert default.returncode == 0 and off.returncode == 0, default.stderr + off.stderr
    assert json.loads(default.stdout)["refine"] == "grabcut" and json.loads(off.stdout)["refine"] is None
    refined = np.asarray(Image.open(tmp_path / "a.png")) > 0
    plain = np.asarray(Image.open(tmp_path / "b.png")) > 0
    predictor = Predictor(tiny)
    predictor.set_image(photo)
    masks, scores, _ = predictor.predict(np.array([[290, 150]]), np.array([1]))
    assert np.array_equal(plain, masks[int(np.argmax(scores))])
    assert not np.array_equal(refined, plain) and refined.any()
    assert SAM_SETTINGS.refine is None
