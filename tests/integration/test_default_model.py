"""The bundled default model (`tiny`): shipped weights, default everywhere, quality floors on
held-out synthetic scenes, and the data engine's automatic stage feeding training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from helpers import REPO, run
from promptseg import Predictor, default_model, sample_image_path
from promptseg.checkpoints import default_checkpoint
from promptseg.eval.methods import SamMethod
from promptseg.eval.protocols import Instance, evaluate_instance, summarise
from promptseg.everything import generator_defaults
from promptseg.io import read_image
from promptseg.train.synth import SceneGenerator

HELD_OUT_SEED = 424242  # training scenes use other seeds


@pytest.fixture(scope="module")
def tiny():
    model = default_model()
    assert model.model_type == "tiny"
    return model


def test_bundled_weights_are_small_half_precision_and_say_where_they_come_from(tiny):
    path = default_checkpoint()
    assert path.stat().st_size <= 25 * 1024 * 1024
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("mask_decoder.iou_token.weight").dtype.is_floating_point
        assert str(f.get_tensor("mask_decoder.iou_token.weight").dtype) == "torch.float16"
    assert meta["model_type"] == "tiny" and "research and education" in meta["licence"]
    assert tiny.model_type == "tiny" and next(tiny.parameters()).dtype.is_floating_point
    assert str(next(tiny.parameters()).dtype) == "torch.float32"


def test_segment_without_a_model_uses_the_default_and_answers_inside_the_box(tmp_path):
    # End to end through the CLI with no model named. Quality is measured on many instances below
    # and in MODEL_CARD.md; on this one box the shipped weights give part of the cup (its inside and
    # rim, 45 % of the box; the first shipped weights filled 71 %), a regression the model card reports.
    image = sample_image_path("coffee.png")  # 600x400, a cup of coffee on a saucer
    out = run("segment", image, "--box", "150,20,470,330", "-o", tmp_path / "m.png", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["model"] == "tiny"
    mask = read_image(tmp_path / "m.png")[..., 0] > 127
    assert mask.shape == (400, 600) and mask.sum() > 0
    assert mask[20:330, 150:470].sum() >= 0.95 * mask.sum()


def _held_out(n: int):
    gen = SceneGenerator(HELD_OUT_SEED)
    for i in range(n):
        img, masks, kinds = gen.scene(i)
        for m, k in zip(masks, kinds):
            if k != "background" and m.mean() > 0.01:
                yield img, Instance(f"{i}", "synthetic", "", m)


@pytest.fixture(scope="module")
def held_out_rows(tiny):
    method = SamMethod(Predictor(tiny))
    rows = []
    current = None
    for img, inst in _held_out(15):
        if current is not img:
            method.set_image(img)
            current = img
        rows.append(evaluate_instance(method, inst, {"box", "click", "noc"}))
    return rows


def test_quality_on_held_out_synthetic_scenes_does_not_regress(held_out_rows):
    # Guards against regressions of the shipped weights (measured: box 0.850, 1-click oracle 0.808
    # on these 64 instances; stage 12: 0.837 and 0.813). The floors (box 0.90, 1 click
    # 0.80) are not reached yet: see MODEL_CARD.md.
    s = summarise(held_out_rows)
    assert s["instances"] >= 40
    assert s["box"] >= 0.83, s
    assert s["click1_oracle"] >= 0.79, s


def test_corrective_clicks_with_the_previous_mask_improve_the_answer(held_out_rows):
    # SAM's refinement loop (the NoC protocol): each click goes in with the previous answer's
    # logits as the mask input. The weights shipped before the refinement fine-tune answered every
    # such click with an empty mask (IoU 0 after click 2). Measured now: mean IoU 0.73 after one
    # click, 0.90 after five; NoC@85 4.22 (stage 12: 4.45).
    first = np.mean([r["click1"] for r in held_out_rows])
    fifth = np.mean([r["ious"][min(4, len(r["ious"]) - 1)] for r in held_out_rows])
    assert fifth >= first + 0.12 and fifth >= 0.88, (first, fifth)
    assert summarise(held_out_rows)["noc85"] < 4.8


def test_everything_mode_with_the_default_model(tiny):
    from promptseg.everything import MaskGenerator

    image = read_image(sample_image_path("chelsea.png"))
    every = MaskGenerator(tiny, points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0).generate(image)
    kept = MaskGenerator(tiny, points_per_side=8).generate(image)  # the model's own thresholds
    assert len(every) >= 5 and len(kept) <= len(every)
    for r in every:
        assert r["segmentation"].shape == image.shape[:2] and r["area"] == r["segmentation"].sum() > 0
        x, y, w, h = r["bbox"]
        ys, xs = np.nonzero(r["segmentation"])
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())
    assert all(r["predicted_iou"] > generator_defaults(tiny)["pred_iou_thresh"] for r in kept)


def test_data_engine_writes_a_shard_that_training_reads(tmp_path):
    from promptseg.train.data import read_sa1b
    from promptseg.train.loop import TrainConfig, train

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee.png", "chelsea.png"):
        (photos / name).write_bytes(sample_image_path(name).read_bytes())
    (photos / "broken.png").write_bytes(b"not a png")
    out = run("engine", photos, "-o", tmp_path / "shard", "--points-per-side", "8", "--quiet")
    assert out.returncode == 1 and "broken.png" in out.stderr  # reported, the others still done
    entries = read_sa1b(tmp_path / "shard")
    assert sorted(e.image_path.name for e in entries) == ["sa_chelsea.png", "sa_coffee.png"]
    doc = json.loads((tmp_path / "shard" / "sa_coffee.json").read_text())
    th = generator_defaults(default_model())
    assert doc["annotations"] and th["pred_iou_thresh"] < 0.88  # the tiny model's own thresholds
    assert all(a["predicted_iou"] > th["pred_iou_thresh"] for a in doc["annotations"])
    assert all(a["stability_score"] >= th["stability_score_thresh"] for a in doc["annotations"])
    cfg = TrainConfig.from_dict({
        "model": {"type": "tiny", "checkpoint": str(default_checkpoint())},
        "data": [{"kind": "sa1b", "path": str(tmp_path / "shard")}],
        "train": {"output": str(tmp_path / "run"), "steps": 1, "batch_size": 1, "masks_per_image": 1},
        "recipe": {"point_rounds": 1, "mask_only_rounds": 0},
    })
    assert train(cfg, quiet=True).is_file()
    # re-running skips what is done
    again = run("engine", photos / "coffee.png", "-o", tmp_path / "shard", "--quiet")
    assert again.returncode == 0
    assert np.isfinite(json.loads((tmp_path / "run" / "last.json").read_text())["loss"])


def test_everything_cli_with_no_mask_kept_writes_empty_results(tmp_path):
    image = sample_image_path("coffee.png")
    out = run("everything", image, "-o", tmp_path, "--pred-iou-thresh", "0.9999", "--points-per-side", "4", "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "coffee.json").read_text())["annotations"] == []
    assert np.array_equal(read_image(tmp_path / "coffee_overlay.png"), read_image(image))


def test_missing_bundled_weights_are_a_clear_error(monkeypatch, tmp_path):
    import promptseg.checkpoints as ckpt

    monkeypatch.setattr(ckpt, "default_checkpoint", lambda: tmp_path / "tiny.safetensors")
    with pytest.raises(FileNotFoundError, match="bundled default model is missing"):
        ckpt.default_model()


def _script(name: str, *args):
    import subprocess
    import sys

    script = REPO / "experiments" / name
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


def _refuses_eval_data(tmp_path, name: str) -> None:
    evald = tmp_path / "eval-data" / "x"
    evald.mkdir(parents=True)
    out = _script(name, "--sources", evald)
    assert out.returncode != 0 and "evaluation only" in out.stderr


def test_everything_thresholds_are_chosen_on_training_data_only(tmp_path):
    assert run("synth", tmp_path / "shard", "--count", "2", "--seed", "31", "--quiet").returncode == 0
    out = _script("choose_everything_thresholds.py", "--sources", tmp_path / "shard", "--images", "2",
                  "-o", tmp_path / "th.json")
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "th.json").read_text())
    assert len(doc["rows"]) == 13 * 5  # every predicted-IoU x stability pair
    f1 = [r["f1"] for r in doc["rows"]]
    assert doc["best"]["f1"] == max(f1) > 0  # the default model finds some of the scenes' objects
    for r in doc["rows"]:
        fig = r["sources"]["shard"]
        assert 0 <= fig["precision"] <= 1 and 0 <= fig["recall"] <= 1
    # a stricter filter never keeps more masks
    by_iou = [r["sources"]["shard"]["masks_per_image"] for r in doc["rows"] if r["stability_score_thresh"] == 0]
    assert by_iou == sorted(by_iou, reverse=True) and by_iou[0] > by_iou[-1]
    assert f"pred_iou_thresh={doc['best']['pred_iou_thresh']}" in out.stdout
    _refuses_eval_data(tmp_path, "choose_everything_thresholds.py")


def test_encoder_use_script_shows_the_decoder_reads_the_image(tmp_path):
    assert run("synth", tmp_path / "shard", "--count", "4", "--seed", "32", "--quiet").returncode == 0
    out = _script("encoder_use.py", "--sources", tmp_path / "shard", "--masks", "16", "-o", tmp_path / "use.json")
    assert out.returncode == 0, out.stderr
    fig = json.loads((tmp_path / "use.json").read_text())["shard"]
    assert fig["masks"] == 16
    for key, value in fig.items():
        assert key == "masks" or 0 <= value <= 1, (key, value)
    # the shipped weights lean on the image embedding: an all-zero one costs box and click IoU
    assert fig["box_embedding"] > fig["box_zeros"] + 0.1
    assert fig["click_oracle_embedding"] > fig["click_oracle_zeros"] + 0.1
    assert fig["click_oracle_embedding"] >= fig["click_top_embedding"]
    assert "shard" in out.stdout
    _refuses_eval_data(tmp_path, "encoder_use.py")
