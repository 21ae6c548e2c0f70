"""ONNX export and the ONNX Runtime path: parity with torch on the same weights (the default
model and a random vit_b), Meta's decoder interface, int8 accuracy, a run with torch made
unimportable, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import BATCHED_BOXES, agreement, assert_close_scaled
from helpers import PROMPTS as SHARED_PROMPTS
from promptseg import Predictor, default_model, sample_image_path
from promptseg.export import OnnxPredictor, export_model

PROMPTS = {
    **SHARED_PROMPTS,
    "many points": dict(
        point_coords=np.random.default_rng(0).uniform(10, 390, (14, 2)), point_labels=np.arange(14) % 2
    ),
    "batched boxes": BATCHED_BOXES,
}


def _check_same(torch_pred, onnx_pred, kwargs, multimask):
    t_masks, t_scores, t_low = torch_pred.predict(**kwargs, multimask_output=multimask)
    o_masks, o_scores, o_low = onnx_pred.predict(**kwargs, multimask_output=multimask)
    assert o_masks.shape == t_masks.shape and o_masks.dtype == bool
    assert_close_scaled(o_low, t_low, rtol=1e-3, atol=1e-3)
    assert_close_scaled(o_scores, t_scores, rtol=1e-3, atol=1e-3)
    assert agreement(o_masks, t_masks) >= 0.999
    t_logits = torch_pred.predict(**kwargs, multimask_output=multimask, return_logits=True)[0]
    o_logits = onnx_pred.predict(**kwargs, multimask_output=multimask, return_logits=True)[0]
    assert_close_scaled(o_logits, t_logits, rtol=1e-3, atol=1e-3)
    return t_low


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-tiny")
    paths = export_model(default_model(), out, quantize="int8")
    assert {p.name for p in paths.values()} == {"encoder.onnx", "decoder.onnx", "encoder.int8.onnx", "decoder.int8.onnx"}
    return out


@pytest.fixture(scope="module")
def tiny_pair(tiny_onnx, photo):
    t = Predictor(default_model())
    t.set_image(photo)
    o = OnnxPredictor(tiny_onnx)
    o.set_image(photo)
    return t, o


@pytest.fixture(scope="module")
def vit_b_onnx(tmp_path_factory, vit_b_pair, photo):
    out = tmp_path_factory.mktemp("onnx-vit-b")
    export_model(vit_b_pair[1], out)
    t = Predictor(vit_b_pair[1])
    t.set_image(photo)
    o = OnnxPredictor(out)
    o.set_image(photo)
    return t, o


def test_tiny_embedding_matches(tiny_pair):
    t, o = tiny_pair
    assert o.original_size == t.original_size and o.input_size == t.input_size
    assert_close_scaled(o.get_image_embedding(), t.get_image_embedding(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_tiny_prompts_match(tiny_pair, prompt, multimask):
    _check_same(*tiny_pair, PROMPTS[prompt], multimask)


def test_tiny_mask_input_refinement_and_mask_only_match(tiny_pair):
    t, o = tiny_pair
    low = _check_same(t, o, PROMPTS["one point"], True)
    refine = dict(PROMPTS["points with negatives"], mask_input=low[:1])
    _check_same(t, o, refine, False)
    _check_same(t, o, dict(mask_input=low[1:2]), True)


def test_tiny_zoom_refinement_runs_on_either_predictor(tiny_pair, photo):
    """The zoom refinement embeds a crop with whichever predictor gave the answer, and gives it
    its image back."""
    from promptseg.refine import zoom_refine

    t, o = tiny_pair
    h, w = t.original_size
    box = np.array([w * 0.4, h * 0.35, w * 0.6, h * 0.6])
    answers = {}
    for name, pred in (("torch", t), ("onnx", o)):
        logits, _, low = pred.predict(box=box, multimask_output=False, return_logits=True)
        answers[name] = zoom_refine(pred, photo, logits[0], box=box) > 0
        assert not np.array_equal(answers[name], logits[0] > 0)
        assert np.array_equal(pred.predict(box=box, multimask_output=False)[0][0], logits[0] > 0)  # image restored
    assert agreement(answers["onnx"], answers["torch"]) >= 0.99 and answers["onnx"].any()


def test_tiny_flip_averaging_runs_on_either_predictor(tiny_onnx, photo):
    """Mirror-image averaging wraps the ONNX Runtime predictor as it wraps the torch one."""
    from promptseg.predict.flip import FlipPredictor

    t, o = FlipPredictor(Predictor(default_model())), FlipPredictor(OnnxPredictor(tiny_onnx))
    for pred in (t, o):
        pred.set_image(photo)
    h, w = photo.shape[:2]
    box = np.array([w * 0.25, h * 0.05, w * 0.8, h * 0.85])
    clicks, labels = np.array([[w * 0.5, h * 0.45], [w * 0.9, h * 0.9]]), np.array([1, 0])
    for kw in (dict(box=box, multimask_output=False), dict(point_coords=clicks, point_labels=labels)):
        (mt, st, lt), (mo, so, lo) = t.predict(**kw, return_logits=True), o.predict(**kw, return_logits=True)
        assert_close_scaled(mo, mt, rtol=1e-3, atol=1e-3)
        assert_close_scaled(lo, lt, rtol=1e-3, atol=1e-3)
        assert np.allclose(so, st, atol=1e-3)


def test_vit_b_matches_torch(vit_b_onnx):
    t, o = vit_b_onnx
    assert_close_scaled(o.get_image_embedding(), t.get_image_embedding(), rtol=1e-3, atol=1e-3)
    for name in ("one point", "points with negatives", "box and points", "batched boxes"):
        low = _check_same(t, o, PROMPTS[name], True)
    _check_same(t, o, dict(PROMPTS["one point"], mask_input=low[0, :1]), False)


def _meta_feeds(torch_pred, points, labels) -> dict[str, np.ndarray]:
    """decoder.onnx inputs as Meta's export documents them, for points in the original frame."""
    coords = torch_pred.transform.apply_coords(np.array(points, dtype=float), torch_pred.original_size)
    return {
        "image_embeddings": torch_pred.get_image_embedding().numpy(),
        "point_coords": coords[None].astype(np.float32),
        "point_labels": np.array([labels], dtype=np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array(torch_pred.original_size, dtype=np.float32),
    }


def test_decoder_speaks_metas_onnx_interface(vit_b_onnx, vit_b_pair):
    """decoder.onnx against the reference's own export wrapper (segment_anything.utils.onnx)
    on the same weights and inputs: all four mask tokens at full size, scores, low-res logits."""
    from segment_anything.utils.onnx import SamOnnxModel

    t, o = vit_b_onnx
    ref = SamOnnxModel(vit_b_pair[0], return_single_mask=False)
    feeds = _meta_feeds(t, [[300.0, 200.0], [120.0, 80.0], [0.0, 0.0]], [1, 0, -1])
    masks, scores, low = o.decoder.run(None, feeds)
    with torch.no_grad():
        r_masks, r_scores, r_low = ref(*(torch.from_numpy(v) for v in feeds.values()))
    assert masks.shape == tuple(r_masks.shape) == (1, 4, *t.original_size)
    assert_close_scaled(low, r_low, rtol=1e-3, atol=1e-3)
    assert_close_scaled(scores, r_scores, rtol=1e-3, atol=1e-3)
    assert_close_scaled(masks, r_masks, rtol=1e-3, atol=1e-3)
    assert agreement(masks > 0, r_masks > 0) >= 0.999


def test_return_single_mask_picks_as_metas_export(tmp_path, vit_b_pair, vit_b_onnx):
    from segment_anything.utils.onnx import SamOnnxModel

    t = vit_b_onnx[0]
    export_model(vit_b_pair[1], tmp_path, return_single_mask=True)
    single = OnnxPredictor(tmp_path)
    ref = SamOnnxModel(vit_b_pair[0], return_single_mask=True)
    for pts, labels in (([[300.0, 200.0], [0.0, 0.0]], [1, -1]), ([[300.0, 200.0], [120.0, 80.0], [0, 0]], [1, 0, -1])):
        feeds = _meta_feeds(t, pts, labels)
        masks, scores, _ = single.decoder.run(None, feeds)
        with torch.no_grad():
            r_masks, r_scores, _ = ref(*(torch.from_numpy(v) for v in feeds.values()))
        assert masks.shape[1] == 1
        assert_close_scaled(scores, r_scores, rtol=1e-3, atol=1e-3)
        assert agreement(masks > 0, r_masks > 0) >= 0.999


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_int8_masks_stay_close_to_fp32(tiny_onnx):
    """Quantized vs fp32 on the default model: mean mask IoU over clicks and boxes on both
    bundled photos (the benchmark reports the same on the evaluation photos)."""
    fp32, int8 = OnnxPredictor(tiny_onnx), OnnxPredictor(tiny_onnx, precision="int8")
    rng = np.random.default_rng(1)
    ious = []
    for name in ("coffee.png", "chelsea.png"):
        for pred in (fp32, int8):
            pred.set_image(sample_image_path(name))
        h, w = fp32.original_size
        for _ in range(10):
            x, y = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
            click = dict(point_coords=np.array([[x, y]]), point_labels=np.array([1]), multimask_output=False)
            box = dict(box=np.array([x - 0.2 * w, y - 0.2 * h, x + 0.2 * w, y + 0.2 * h]), multimask_output=False)
            for kw in (click, box):
                ious.append(_mask_iou(fp32.predict(**kw)[0][0], int8.predict(**kw)[0][0]))
    assert np.mean(ious) >= 0.95, np.mean(ious)


def test_everything_mode_on_onnx_matches_torch(tiny_onnx, photo):
    from promptseg import MaskGenerator

    kwargs = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="binary_mask")
    ours = MaskGenerator(OnnxPredictor(tiny_onnx), **kwargs).generate(photo)
    ref = MaskGenerator(default_model(), **kwargs).generate(photo)
    assert len(ours) == len(ref) > 10
    for a, b in zip(ours, ref):
        assert _mask_iou(a["segmentation"], b["segmentation"]) >= 0.99
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-3


def test_runs_where_torch_cannot_be_imported(tiny_onnx, tiny_pair, tmp_path):
    """A fresh interpreter in which every import of torch fails: read a photo, embed, predict."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError(f"{{name}} is blocked in this test")

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from promptseg import sample_image_path
        from promptseg.export import OnnxPredictor

        pred = OnnxPredictor({str(tiny_onnx)!r})
        pred.set_image(sample_image_path("coffee.png"))
        masks, scores, low = pred.predict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]))
        np.savez({str(tmp_path / "out.npz")!r}, masks=masks, scores=scores)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "out.npz")
    t_masks, t_scores, _ = tiny_pair[0].predict(**PROMPTS["one point"])
    assert agreement(got["masks"], t_masks) >= 0.999
    assert_close_scaled(got["scores"], t_scores, rtol=1e-3, atol=1e-3)


def test_onnx_predictor_errors_are_clear(tmp_path, tiny_onnx):
    with pytest.raises(FileNotFoundError, match="promptseg export"):
        OnnxPredictor(tmp_path)
    with pytest.raises(ValueError, match="precision"):
        OnnxPredictor(tiny_onnx, precision="fp8")
    pred = OnnxPredictor(tiny_onnx)
    with pytest.raises(ValueError, match="no image is set"):
        pred.predict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))
    pred.set_image(sample_image_path("coffee.png"))
    with pytest.raises(ValueError, match="outside"):
        pred.predict(point_coords=np.array([[1000.0, 1.0]]), point_labels=np.array([1]))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "promptseg.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_export_and_onnx_backend(tmp_path, photo):
    out = run_cli("export", "-o", tmp_path / "onnx", "--quantize", "int8", "--opset", "17")
    assert out.returncode == 0, out.stderr
    for name in ("encoder.onnx", "decoder.onnx", "encoder.int8.onnx", "decoder.int8.onnx"):
        assert (tmp_path / "onnx" / name).stat().st_size > 1e6
    image = sample_image_path("coffee.png")
    masks = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        target = tmp_path / f"{backend}.png"
        out = run_cli("segment", image, "--point", "300,200", "--backend", backend, "--onnx-dir", tmp_path / "onnx",
                      "--refine", "none", "-o", target, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["backend"] == backend
        masks[backend] = np.asarray(Image.open(target)) > 0
    assert agreement(masks["onnx"], masks["torch"]) >= 0.999
    assert _mask_iou(masks["onnx-int8"], masks["onnx"]) >= 0.9
    for backend in ("torch", "onnx"):  # refinement works on either predictor's logits
        out = run_cli("segment", image, "--point", "300,200", "--backend", backend, "--onnx-dir", tmp_path / "onnx",
                      "--refine", "grabcut", "-o", tmp_path / f"{backend}_refined.png", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["refine"] == "grabcut"
    refined = {b: np.asarray(Image.open(tmp_path / f"{b}_refined.png")) > 0 for b in ("torch", "onnx")}
    assert agreement(refined["onnx"], refined["torch"]) >= 0.99 and refined["onnx"].any()

    from promptseg.train.synth import write_shard

    list(write_shard(tmp_path / "scenes", 3, seed=1))  # eval scores either runtime on the same instances
    scores = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        out = run_cli("eval", tmp_path / "scenes", "--backend", backend, "--onnx-dir", tmp_path / "onnx",
                      "--protocols", "box,click", "--baselines", "none", "-o", tmp_path / f"{backend}.json", "--quiet")
        assert out.returncode == 0, out.stderr
        report = json.loads((tmp_path / f"{backend}.json").read_text())
        assert report["model"]["backend"] == backend
        [(name, scores[backend])] = report["overall"].items()
        assert name == "promptseg tiny" + ("" if backend == "torch" else f" {backend}")
    assert scores["torch"]["instances"] == scores["onnx"]["instances"] >= 6
    for key in ("box", "click1", "click1_oracle"):
        assert abs(scores["onnx"][key] - scores["torch"][key]) < 0.005, (key, scores)
        assert abs(scores["onnx-int8"][key] - scores["torch"][key]) < 0.05, (key, scores)

    ev = run_cli("everything", image, "-o", tmp_path / "ev", "--backend", "onnx", "--onnx-dir", tmp_path / "onnx",
                 "--points-per-side", "8", "--pred-iou-thresh", "0", "--no-overlay")
    assert ev.returncode == 0, ev.stderr
    doc = json.loads((tmp_path / "ev" / "coffee.json").read_text())
    assert len(doc["annotations"]) > 0 and doc["image"]["width"] == photo.shape[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("segment", "IMG", "--point", "1,1", "--backend", "tpu"), "--backend must be one of"),
        (("segment", "IMG", "--point", "1,1", "--backend", "onnx", "--onnx-dir", "MISSING"), "promptseg export"),
        (("eval", "OUT", "--backend", "tpu"), "--backend must be one of"),
        (("export", "-o", "OUT", "--quantize", "int4"), "--quantize must be int8"),
        (("export", "-o", "OUT", "--opset", "9"), "opset 9 is not supported"),
    ],
)
def test_cli_export_errors_are_one_line(tmp_path, args, message):
    image = sample_image_path("coffee.png")
    args = [str(image) if a == "IMG" else str(tmp_path / a) if a in ("MISSING", "OUT") else a for a in args]
    out = run_cli(*args)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr


def test_set_embedding_from_elsewhere_answers_like_set_image(tiny_onnx, tiny_pair):
    """An embedding computed by another process (e.g. the server's /embedding) plus the image size."""
    t, o = tiny_pair
    other = OnnxPredictor(tiny_onnx)
    other.set_embedding(t.get_image_embedding().numpy(), t.original_size)
    assert other.input_size == t.input_size
    a, b = other.predict(**PROMPTS["box and points"]), o.predict(**PROMPTS["box and points"])
    assert agreement(a[0], b[0]) >= 0.999
    assert_close_scaled(a[2], b[2], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="this model expects"):
        other.set_embedding(np.zeros((1, 256, 64, 64)), (10, 10))


def test_exporting_leaves_the_callers_model_as_it_was(tmp_path):
    """A server exports decoder.onnx from the model it keeps serving: no mode, dtype or device change."""
    from promptseg.export.exporter import export_decoder

    model = default_model().half().train()
    export_decoder(model, tmp_path / "decoder.onnx")
    assert model.training and all(p.dtype == torch.float16 for p in model.parameters())
    assert (tmp_path / "decoder.onnx").stat().st_size > 1e6
