"""vit_l and vit_h parity with the reference on the same random weights and a real photo.

Slower than vit_b (about a minute and three minutes here); the same checks, fewer prompts."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from helpers import agreement, assert_close_scaled, randomize_
from promptseg import Predictor, build_model


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["vit_l", "vit_h"])
def test_large_models_match_reference(model_type, photo, tmp_path):
    from segment_anything import SamPredictor, sam_model_registry

    ref_model = randomize_(sam_model_registry[model_type](), seed=7).eval()
    path = tmp_path / f"random_{model_type}.pth"
    torch.save(ref_model.state_dict(), path)
    ours_model = build_model(checkpoint=path)  # type detected from the file
    path.unlink()
    assert ours_model.model_type == model_type
    ref, ours = SamPredictor(ref_model), Predictor(ours_model)
    with torch.no_grad():
        ref.set_image(photo)
    ours.set_image(photo)
    assert_close_scaled(ours.features, ref.features)
    for kwargs in (
        dict(point_coords=np.array([[300.0, 200.0], [120.0, 80.0]]), point_labels=np.array([1, 0])),
        dict(box=np.array([150.0, 60.0, 470.0, 380.0]), multimask_output=False),
    ):
        r = ref.predict(**kwargs)
        o = ours.predict(**kwargs)
        assert_close_scaled(torch.from_numpy(o[2]), torch.from_numpy(r[2]))
        assert_close_scaled(torch.from_numpy(o[1]), torch.from_numpy(r[1]))
        assert agreement(o[0], r[0]) >= 0.9999
    del ref, ours, ref_model, ours_model
    gc.collect()
