"""The `tiny` configuration: registry entry, shapes, and its prompt drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptseg import Predictor, build_model
from promptseg.checkpoints import detect_model_type, expected_shapes
from promptseg.model import get_config
from promptseg.model.prompt_encoder import draw_prompt_mask, paint_clicks


@pytest.mark.parametrize("name,grid", [("tiny", 16), ("tiny_s8", 32)])
def test_tiny_builds_with_its_embedding_grid_and_is_detected(name, grid):
    torch.manual_seed(0)
    model = get_config(name).build().eval()
    assert model.img_size == 256
    with torch.no_grad():
        emb = model.image_encoder(torch.zeros(2, 3, 256, 256))
    assert emb.shape == (2, 256, grid, grid)
    assert model.prompt_encoder.mask_input_size == (4 * grid, 4 * grid)
    assert detect_model_type(model.state_dict()) == name
    assert set(expected_shapes(name)) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) * 2 < 25 * 1024 * 1024  # fits 25 MB in fp16
    assert model.prompt_encoder.draw_prompts and not get_config("vit_b").build().prompt_encoder.draw_prompts


def test_draw_prompt_mask_fills_boxes_and_disks_around_foreground_clicks():
    boxes = torch.tensor([[32.0, 64.0, 96.0, 128.0]])
    m = draw_prompt_mask(None, boxes, (64, 64), (256, 256), 1)[0, 0]
    assert m.shape == (64, 64) and set(m.unique().tolist()) == {-4.0, 4.0}
    inside = m > 0
    ys, xs = np.nonzero(inside.numpy())
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (8, 23, 16, 31)  # cells whose centres are inside
    pts = torch.tensor([[[128.0, 128.0], [10.0, 10.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0, -1]])
    m = draw_prompt_mask((pts, labels), None, (64, 64), (256, 256), 1)[0, 0]
    ys, xs = np.nonzero((m > 0).numpy())
    assert abs(xs.mean() - 31.5) < 0.6 and abs(ys.mean() - 31.5) < 0.6
    assert len(xs) <= 16  # a disk of two cells' radius; background and padding clicks draw nothing


def test_clicks_are_painted_over_a_given_mask_input():
    base = torch.full((1, 1, 64, 64), 0.5)
    # a foreground click, a background click overlapping it (later wins), a lone background
    # click, then a padding point and a box's corners, which paint nothing
    pts = torch.tensor([[[128.0, 128.0], [140.0, 128.0], [40.0, 40.0], [0.0, 0.0], [200, 200], [250, 250]]])
    labels = torch.tensor([[1, 0, 0, -1, 2, 3]])
    m = paint_clicks(base, (pts, labels), (256, 256))[0, 0]
    assert set(m.unique().tolist()) == {-4.0, 0.5, 4.0}
    assert m[31, 30] == 4.0 and m[31, 33] == -4.0 and m[31, 34] == -4.0  # the overlap went to the later click
    assert m[9, 9] == -4.0 and m[0, 0] == 0.5 and m[50, 50] == 0.5
    assert ((m != 0.5).sum()) < 3 * 16
    # one mask input shared by a batch of prompts, as the ONNX decoder receives it
    two = paint_clicks(base, (pts.expand(2, -1, -1), labels.expand(2, -1)), (256, 256))
    assert two.shape == (2, 1, 64, 64) and torch.equal(two[0], two[1]) and torch.equal(two[0, 0], m)
    # the tiny prompt encoder paints a refinement's clicks; SAM's encoders use the mask as given
    torch.manual_seed(0)
    enc = get_config("tiny").build().prompt_encoder
    _, dense = enc((pts, labels), None, base)
    assert torch.allclose(dense, enc.mask_downscaling(m[None, None]))
    sam_enc = get_config("vit_b").build().prompt_encoder
    _, dense = sam_enc((pts, labels), None, torch.zeros(1, 1, 256, 256))
    assert torch.allclose(dense, sam_enc.mask_downscaling(torch.zeros(1, 1, 256, 256)))


def test_predictor_passes_the_drawn_prompt_as_the_first_mask_input(photo):
    torch.manual_seed(1)
    model = get_config("tiny").build().eval()
    pred = Predictor(model)
    pred.set_image(photo)
    _, scores, low = pred.predict(np.array([[300, 200]]), np.array([1]), multimask_output=True)
    coords = torch.as_tensor(pred.transform.apply_coords(np.array([[300.0, 200.0]]), photo.shape[:2]))[None].float()
    labels = torch.ones(1, 1)
    drawn = draw_prompt_mask((coords, labels), None, model.prompt_encoder.mask_input_size, (256, 256), 1)
    with torch.no_grad():
        sparse, dense = model.prompt_encoder((coords, labels), None, drawn)
        ref_low, ref_iou = model.mask_decoder(
            pred.features, model.prompt_encoder.get_dense_pe(), sparse, dense, True
        )
    assert np.allclose(low, ref_low[0].numpy(), atol=1e-4)
    assert np.allclose(scores, ref_iou[0].numpy(), atol=1e-5)
    # an explicit mask input replaces the drawing
    _, s2, _ = pred.predict(np.array([[300, 200]]), np.array([1]), mask_input=low[:1], multimask_output=False)
    assert not np.allclose(s2[0], scores[0])
    assert build_model("tiny").prompt_encoder.draw_prompts
