"""`promptseg.compat` as deep as the scripts that use Meta's package: one script of Meta's
predictor-notebook kind, importing its submodules, is run against `segment_anything` and again
with only its imports pointed at `promptseg.compat`; the answers must agree."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from promptseg import sample_image_path

SCRIPT = '''
import sys

import numpy as np
import torch
from PIL import Image

from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    area_from_rle, batch_iterator, batched_mask_to_box, box_xyxy_to_xywh, build_all_layer_point_grids,
    calculate_stability_score, coco_encode_rle, generate_crop_boxes, is_box_near_crop_edge, mask_to_rle_pytorch,
    remove_small_regions, rle_to_mask, uncrop_boxes_xyxy, uncrop_masks, uncrop_points,
)
from segment_anything.utils.onnx import SamOnnxModel
from segment_anything.utils.transforms import ResizeLongestSide

checkpoint, image_path, out_path = sys.argv[1:4]
out = {}
sam = sam_model_registry["vit_b"](checkpoint=checkpoint)
assert isinstance(sam, Sam)
image = np.array(Image.open(image_path).convert("RGB"))

# the predictor, as the notebook uses it
predictor = SamPredictor(sam)
predictor.set_image(image)
masks, scores, logits = predictor.predict(point_coords=np.array([[300, 200]]), point_labels=np.array([1]),
                                          multimask_output=True)
out["click_masks"], out["click_scores"], out["click_logits"] = masks, scores, logits
boxes = torch.tensor([[150, 20, 470, 330], [220, 120, 380, 280]], dtype=torch.float)
transformed = predictor.transform.apply_boxes_torch(boxes, image.shape[:2])
box_masks, box_scores, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=transformed,
                                                   multimask_output=False)
out["box_masks"], out["box_scores"] = box_masks.numpy(), box_scores.numpy()
out["embedding"] = predictor.get_image_embedding().numpy()

# the transforms
resize = ResizeLongestSide(sam.image_encoder.img_size)
out["preprocess_shape"] = np.array(ResizeLongestSide.get_preprocess_shape(400, 600, 1024))
out["coords"] = resize.apply_coords(np.array([[10.0, 20.0], [599.0, 399.0]]), image.shape[:2])
small = torch.as_tensor(image).permute(2, 0, 1)[None].float()
out["image_torch"] = resize.apply_image_torch(small).numpy()

# the everything-mode helpers, on fixed inputs
rng = np.random.default_rng(0)
fixed = torch.as_tensor(rng.random((3, 40, 50)) > 0.7)
fixed[1] = False
fixed[2, :10, :] = False
out["boxes"] = batched_mask_to_box(fixed).numpy()
rles = mask_to_rle_pytorch(fixed)
out["rle_back"] = np.stack([rle_to_mask(r) for r in rles])
out["areas"] = np.array([area_from_rle(r) for r in rles])
out["coco_counts"] = np.array([len(coco_encode_rle(r)["counts"]) for r in rles])
out["stability"] = calculate_stability_score(torch.as_tensor(logits), 0.0, 1.0).numpy()
out["grids"] = np.concatenate(build_all_layer_point_grids(4, 2, 2))
crops, layers = generate_crop_boxes((400, 600), 2, 512 / 1500)
out["crops"], out["layers"] = np.array(crops), np.array(layers)
out["xywh"] = box_xyxy_to_xywh(torch.tensor([1, 2, 11, 22])).numpy()
crop_boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 290, 190], [100, 100, 120, 130]])
out["near_edge"] = is_box_near_crop_edge(crop_boxes, [300, 200, 600, 400], [0, 0, 600, 400]).numpy()
out["uncrop_boxes"] = uncrop_boxes_xyxy(crop_boxes, [300, 200, 600, 400]).numpy()
out["uncrop_points"] = uncrop_points(torch.tensor([[1.0, 2.0]]), [300, 200, 600, 400]).numpy()
out["uncrop_masks"] = uncrop_masks(fixed, [5, 7, 55, 47], 60, 70).numpy()
cleaned, changed = remove_small_regions(fixed[0].numpy(), 4, "islands")
out["cleaned"], out["changed"] = cleaned, np.array(changed)
out["batches"] = np.array([len(b[0]) for b in batch_iterator(4, list(range(10)))])

# the ONNX module, run in torch as an export script would trace it
onnx_model = SamOnnxModel(sam, return_single_mask=True, use_stability_score=True, return_extra_metrics=True)
emb = predictor.get_image_embedding()
coords = resize.apply_coords(np.array([[300.0, 200.0], [0.0, 0.0]]), image.shape[:2])[None].astype(np.float32)
with torch.no_grad():
    results = onnx_model(emb, torch.as_tensor(coords), torch.tensor([[1.0, -1.0]]), torch.zeros(1, 1, 256, 256),
                         torch.zeros(1), torch.tensor([400.0, 600.0]))
for name, value in zip(("onnx_masks", "onnx_scores", "onnx_stability", "onnx_areas", "onnx_low_res"), results):
    out[name] = value.numpy()

# everything mode
generator = SamAutomaticMaskGenerator(sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
records = generator.generate(image)
out["everything_n"] = np.array(len(records))
np.savez(out_path, **out)
'''

# outputs of the model: equal up to float rounding (bool masks compared by agreement)
MODEL_OUTPUTS = {"click_masks", "click_scores", "click_logits", "box_masks", "box_scores", "embedding", "stability", "onnx_masks", "onnx_scores", "onnx_stability", "onnx_areas",
                 "onnx_low_res", "everything_n"}


def _run(script, *args):
    done = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def answers(tmp_path_factory, vit_b_checkpoint):
    folder = tmp_path_factory.mktemp("compat")
    theirs, ours = folder / "theirs.py", folder / "ours.py"
    theirs.write_text(SCRIPT)
    ours.write_text(SCRIPT.replace("from segment_anything", "from promptseg.compat"))
    assert "segment_anything" not in ours.read_text()
    photo = sample_image_path("coffee.png")
    _run(theirs, vit_b_checkpoint, photo, folder / "theirs.npz")
    _run(ours, vit_b_checkpoint, photo, folder / "ours.npz")
    return np.load(folder / "theirs.npz"), np.load(folder / "ours.npz")


def test_a_meta_script_gives_the_same_answers_through_compat(answers):
    theirs, ours = answers
    assert sorted(theirs.files) == sorted(ours.files)
    # apply_image_torch: the reference's docstring says B x C x H x W, but it sizes the output from
    # the first two axes (its issue #218: a 400 x 600 photo comes out 341 x 1024); ours follows
    # the docstring, the same shape as apply_image gives
    assert ours["image_torch"].shape == (1, 3, 683, 1024) and theirs["image_torch"].shape == (1, 3, 341, 1024)
    for key in set(theirs.files) - {"image_torch"}:
        a, b = theirs[key], ours[key]
        assert a.shape == b.shape, key
        if key in MODEL_OUTPUTS:
            if a.dtype == bool:
                assert (a == b).mean() >= 0.999, key
            elif key == "onnx_areas":
                assert np.abs(a.astype(np.int64) - b).max() <= max(10, 0.001 * a.max()), key
            else:
                scale = max(float(np.abs(a).max()), 1e-6)
                assert np.abs(a.astype(np.float64) - b).max() <= 1e-3 * scale, (key, np.abs(a - b).max(), scale)
        else:  # the helpers on fixed inputs: exactly the reference's answers
            assert np.array_equal(a, b), key
