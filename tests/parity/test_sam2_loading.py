"""SAM 2 checkpoints as Meta's package saves them (video parts skipped, bad keys named, 2.0 and
2.1 told apart) and the `sam2` compatibility names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptseg import build_model
from promptseg.checkpoints import expected_shapes


@pytest.fixture
def meta_t(sam2_t_checkpoint):
    return sam2_t_checkpoint


def test_meta_checkpoint_loads_with_one_line_about_video_parts(meta_t, capfd):
    sd, path = meta_t
    model = build_model(checkpoint=path)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 160 weights of SAM 2's video model" in err[0]
    assert model.model_type == "sam2.1_hiera_t" and model.family == "sam2"
    ours = model.state_dict()
    assert torch.equal(ours["image_encoder.trunk.blocks.3.attn.qkv.weight"],
                       sd["image_encoder.trunk.blocks.3.attn.qkv.weight"])
    assert torch.equal(ours["mask_decoder.transformer.layers.1.mlp.lin2.bias"],
                       sd["sam_mask_decoder.transformer.layers.1.mlp.layers.1.bias"])
    assert torch.equal(ours["no_mem_embed"], sd["no_mem_embed"])


def test_sam2_0_checkpoints_are_told_apart(meta_t, tmp_path):
    sd, _ = meta_t
    old = {k: v for k, v in sd.items() if k not in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight",
                                                     "obj_ptr_tpos_proj.bias")}
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": old}, path)
    assert build_model(checkpoint=path).model_type == "sam2_hiera_t"
    # an explicit type is taken as given
    assert build_model("sam2.1_hiera_t", checkpoint=path).model_type == "sam2.1_hiera_t"


@pytest.mark.parametrize("change, named", [
    ("drop", "1 missing keys (e.g. mask_decoder.conv_s0.weight)"),
    ("add", "1 unexpected keys (e.g. mask_decoder.extra_head.weight)"),
    ("shape", "1 shape mismatches (e.g. image_encoder.neck.convs.0.conv.weight"),
])
def test_bad_keys_in_a_meta_checkpoint_are_named(meta_t, tmp_path, change, named):
    sd = dict(meta_t[0])
    if change == "drop":
        sd.pop("sam_mask_decoder.conv_s0.weight")
    elif change == "add":
        sd["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    else:
        sd["image_encoder.neck.convs.0.conv.weight"] = torch.zeros(256, 7, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match="does not fit sam2.1_hiera_t") as info:
        build_model("sam2.1_hiera_t", checkpoint=path)
    assert named in str(info.value)


def test_every_size_has_its_own_shapes():
    shapes = {name: expected_shapes(name) for name in ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+",
                                                       "sam2.1_hiera_l")}
    assert len({tuple(sorted(s.items())) for s in shapes.values()}) == 4
    assert shapes["sam2.1_hiera_t"] == expected_shapes("sam2_hiera_t")  # 2.0 and 2.1 share their image model


# --- compatibility names -------------------------------------------------------------------


def test_build_sam2_by_meta_config_names(meta_t):
    from promptseg.compat import build_sam2

    _, path = meta_t
    for config in ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_t.yaml", "sam2.1/sam2.1_hiera_t"):
        model = build_sam2(config, str(path), device="cpu")
        assert model.model_type == "sam2.1_hiera_t" and not model.training
        assert model.mask_decoder.dynamic_multimask == (0.05, 0.98)
    assert build_sam2("sam2.1_hiera_t.yaml", str(path), apply_postprocessing=False).mask_decoder.dynamic_multimask is None
    with pytest.raises(ValueError, match="unknown SAM 2 config 'sam2.1_hiera_x.yaml'; choose one of"):
        build_sam2("sam2.1_hiera_x.yaml", str(path))
    with pytest.raises(ValueError, match="no hydra_overrides_extra"):
        build_sam2("sam2.1_hiera_t.yaml", str(path), hydra_overrides_extra=["++model.x=1"])


def test_from_pretrained_reads_the_cache(meta_t, tmp_path, monkeypatch):
    import shutil

    from promptseg.compat import SAM2AutomaticMaskGenerator, SAM2ImagePredictor

    monkeypatch.setenv("PROMPTSEG_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="promptseg download sam2.1_hiera_t"):
        SAM2ImagePredictor.from_pretrained("facebook/sam2.1-hiera-tiny")
    shutil.copy(meta_t[1], tmp_path / "sam2.1_hiera_tiny.pt")
    predictor = SAM2ImagePredictor.from_pretrained("facebook/sam2.1-hiera-tiny", max_hole_area=8)
    assert predictor.model_type == "sam2.1_hiera_t" and predictor.max_hole_area == 8
    generator = SAM2AutomaticMaskGenerator.from_pretrained("facebook/sam2.1-hiera-tiny", points_per_side=4)
    assert generator.pred_iou_thresh == 0.8 and generator.predictor.model_type == "sam2.1_hiera_t"
    with pytest.raises(ValueError, match="unknown SAM 2 model id"):
        SAM2ImagePredictor.from_pretrained("facebook/sam2.1-hiera-huge")


@pytest.mark.slow
def test_sam2_image_predictor_takes_model_frame_coordinates(meta_t, photo):
    from promptseg.compat import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(build_model(checkpoint=meta_t[1]))
    predictor.set_image(photo)
    h, w = photo.shape[:2]
    point, box = np.array([[300.0, 200.0]]), np.array([150.0, 60.0, 470.0, 380.0])
    scale = np.array([1024 / w, 1024 / h])
    plain = predictor.predict(point, np.array([1]), box)
    framed = predictor.predict(point * scale, np.array([1]), box * np.tile(scale, 2), normalize_coords=False)
    np.testing.assert_allclose(framed[2], plain[2], rtol=1e-4, atol=1e-4)
    assert plain[0].shape == (3, h, w) and np.abs(plain[2]).max() <= 32.0
    predictor.reset_predictor()
    assert not predictor.is_image_set and predictor.image_batch == []


