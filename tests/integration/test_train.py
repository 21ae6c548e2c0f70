"""SAM's training recipe, the loop (checkpoints, log, plot, resume, fine-tuning), data readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from safetensors import safe_open
from safetensors.torch import load_file

from helpers import REPO, run
from promptseg.model import get_config
from promptseg.train.data import read_coco
from promptseg.train.loop import TrainConfig, grad_round_set, lr_factor, train
from promptseg.train.recipe import (
    RecipeOptions,
    dice_loss,
    focal_loss,
    mask_losses,
    noisy_boxes,
    sample_points,
    simulate,
)
from promptseg.train.synth import write_shard


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shard")
    list(write_shard(folder, 6, seed=2))
    return folder


def small_config(shard, out, **kw) -> TrainConfig:
    doc = {
        "model": {"type": "tiny"},
        "data": [{"kind": "sa1b", "path": str(shard), "weight": 1.0}],
        "train": {"output": str(out), "steps": 3, "batch_size": 2, "masks_per_image": 2, "warmup_steps": 1,
                  "save_every": 2, "seed": 1, **kw},
        "recipe": {"point_rounds": 2, "mask_only_rounds": 1},
    }
    return TrainConfig.from_dict(doc)


def test_focal_and_dice_match_their_definitions():
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    p = torch.sigmoid(logits)
    pt = torch.where(target > 0, p, 1 - p)
    alpha = torch.where(target > 0, 0.25, 0.75)
    expected = (-alpha * (1 - pt) ** 2 * torch.log(pt)).mean()
    assert torch.allclose(focal_loss(logits, target), expected)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert torch.allclose(dice_loss(logits, target), dice)


def test_multimask_loss_backpropagates_only_the_best_mask():
    gt = torch.zeros(1, 8, 8)
    gt[0, 2:6, 2:6] = 1
    good = torch.where(gt[0] > 0, 8.0, -8.0)[None, None].repeat(1, 1, 1, 1)
    logits = torch.cat([torch.full((1, 1, 8, 8), -8.0), good, torch.full((1, 1, 8, 8), 8.0)], 1).requires_grad_()
    iou_pred = torch.full((1, 3), 0.5, requires_grad=True)
    total, parts, kept_iou, best = mask_losses(logits, iou_pred, gt, RecipeOptions())
    assert best.tolist() == [1] and kept_iou.item() == 1.0
    total.backward()
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0
    assert logits.grad[0, 1].abs().sum() > 0
    assert iou_pred.grad.abs().min() > 0  # the IoU head learns from every mask


def test_corrective_points_fall_in_the_error_region_and_boxes_are_noisy_but_bounded():
    gen = torch.Generator().manual_seed(0)
    region = torch.zeros(50, 16, 16, dtype=torch.bool)
    region[:, 3, 5] = True
    pts = sample_points(region, gen, 4)
    assert ((pts[:, 0] // 4) == 5).all() and ((pts[:, 1] // 4) == 3).all()
    gt = torch.zeros(200, 256, 256, dtype=torch.bool)
    gt[:, 40:140, 60:100] = True
    boxes = noisy_boxes(gt, gen, RecipeOptions(), 256)
    exact = torch.tensor([60.0, 40.0, 100.0, 140.0])
    err = boxes - exact
    assert err.abs().mean() > 0.5  # noisy
    # std is 10% of the side, capped at 20 px at 1024 (5 px here): nearly all within 4 std
    assert (err.abs() < 4 * 5).float().mean() > 0.99
    assert err[:, 0].std() < 4.5 and err[:, 1].std() < 5.6


def test_simulation_runs_every_round_and_the_loss_has_gradients():
    torch.manual_seed(0)
    model = get_config("tiny").build()
    gt = torch.zeros(4, 256, 256)
    gt[:, 64:160, 80:200] = 1
    emb = model.image_encoder(model.preprocess(torch.rand(1, 3, 256, 256) * 255)).expand(4, -1, -1, -1)
    opts = RecipeOptions()
    assert opts.rounds == 11
    loss, parts, round_iou = simulate(model, emb, gt, torch.Generator().manual_seed(0), opts, {0, 10})
    assert len(round_iou) == 11 and set(parts) == {"focal", "dice", "iou_mse"}
    loss.backward()
    assert model.mask_decoder.iou_token.weight.grad.abs().sum() > 0
    assert model.image_encoder.neck[0].weight.grad.abs().sum() > 0


def test_first_round_weight_sets_the_first_prompts_share_of_the_loss():
    torch.manual_seed(0)
    model = get_config("tiny").build()
    gt = torch.zeros(4, 256, 256)
    gt[:, 64:160, 80:200] = 1
    with torch.no_grad():
        emb = model.image_encoder(model.preprocess(torch.rand(1, 3, 256, 256) * 255)).expand(4, -1, -1, -1)

    def loss(rounds, weight):
        opts = RecipeOptions(point_rounds=2, mask_only_rounds=1, first_round_weight=weight)
        total, parts, _ = simulate(model, emb, gt, torch.Generator().manual_seed(5), opts, rounds)
        return float(total.detach()), parts

    first, first_parts = loss({0}, 1.0)
    last, last_parts = loss({3}, 1.0)
    assert first != pytest.approx(last)
    assert loss({0, 3}, 1.0)[0] == pytest.approx((first + last) / 2, rel=1e-5)
    both, parts = loss({0, 3}, 3.0)
    assert both == pytest.approx((3 * first + last) / 4, rel=1e-5)
    assert loss({0}, 3.0)[0] == pytest.approx(first, rel=1e-5)  # alone, its weight does not scale it
    assert parts["iou_mse"] == pytest.approx((3 * first_parts["iou_mse"] + last_parts["iou_mse"]) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="first_round_weight must be a number >= 0"):
        RecipeOptions(first_round_weight=-1)
    with pytest.raises(ValueError, match="first_round_weight"):
        TrainConfig.from_dict({"data": [{"path": "x"}], "recipe": {"first_round_weight": "3"}})


def test_schedule_and_round_choice():
    cfg = TrainConfig(steps=100, warmup_steps=10, data=[{"path": "x"}])
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) < 0.1 and lr_factor(99, cfg) >= cfg.min_lr_ratio
    gen = torch.Generator().manual_seed(0)
    assert grad_round_set(0, RecipeOptions(), gen) == set(range(11))
    chosen = grad_round_set(0, RecipeOptions(grad_rounds=1), gen)
    assert len(chosen) == 3 and {0, 10} <= chosen


def test_training_writes_checkpoint_log_plot_and_resumes_exactly(shard, tmp_path):
    path = train(small_config(shard, tmp_path / "a"), quiet=True)
    assert path == tmp_path / "a" / "last.safetensors"
    rows = list(csv.DictReader(open(tmp_path / "a" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["model_type"] == "tiny" and meta["step"] == "3"
    assert json.loads(meta["config"])["batch_size"] == 2

    # stop after 2 steps, resume for the third: the same weights as the uninterrupted run
    train(small_config(shard, tmp_path / "b"), quiet=True, max_steps=2)
    assert json.loads((tmp_path / "b" / "last.json").read_text())["step"] == 2
    train(small_config(shard, tmp_path / "b"), quiet=True)
    a, b = load_file(str(path)), load_file(str(tmp_path / "b" / "last.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len(list(csv.DictReader(open(tmp_path / "b" / "log.csv")))) == 3

    # the checkpoint loads as a model through the ordinary loader (type detected)
    from promptseg import build_model

    assert build_model(checkpoint=path).model_type == "tiny"


def test_fine_tuning_with_a_frozen_image_encoder(shard, tmp_path):
    base = tmp_path / "base.safetensors"
    from promptseg.checkpoints import save_weights

    torch.manual_seed(3)
    save_weights(get_config("tiny").build(), base)
    cfg = small_config(shard, tmp_path / "ft", checkpoint=str(base), freeze_image_encoder=True, steps=2)
    out = load_file(str(train(cfg, quiet=True)))
    start = load_file(str(base))
    enc = [k for k in start if k.startswith("image_encoder.")]
    dec = [k for k in start if k.startswith("mask_decoder.") and k.endswith("weight")]
    assert all(torch.equal(start[k], out[k]) for k in enc)  # BN statistics included
    assert any(not torch.equal(start[k], out[k]) for k in dec)


def test_train_cli_reports_config_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nstepz = 3\n[[data]]\npath = "x"\n')
    out = run("train", bad)
    assert out.returncode == 1 and out.stderr.strip().startswith("error: unknown training config keys: stepz")
    assert "Traceback" not in out.stderr
    missing = tmp_path / "m.toml"
    missing.write_text('[[data]]\npath = "nowhere"\n')
    out = run("train", missing)
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def fine_tune_config(path: Path, model_type: str, checkpoint: Path, shard: Path) -> Path:
    """A two-step fine-tune of `model_type` from `checkpoint` on `shard`, into `run` beside `path`."""
    path.write_text(
        f'[model]\ntype = "{model_type}"\ncheckpoint = "{checkpoint}"\n[[data]]\npath = "{shard}"\n'
        '[train]\noutput = "run"\nsteps = 2\nbatch_size = 1\nmasks_per_image = 2\nwarmup_steps = 1\nlr = 1e-4\n'
        "[recipe]\npoint_rounds = 1\nmask_only_rounds = 1\n"
    )
    return path


def test_fine_tuning_sam2_from_metas_checkpoint(shard, tmp_path, sam2_t_checkpoint):
    """`promptseg train` on a SAM 2.1 model, starting from Meta's `.pt`: square inputs, the
    high-res levels and the object-score head are trained (its loss logged), and the result
    loads back through the ordinary loader as the same type."""
    from promptseg import Predictor, build_model, sample_image_path

    cfg = fine_tune_config(tmp_path / "s2.toml", "sam2.1_hiera_t", sam2_t_checkpoint[1], shard)
    out = run("train", cfg, "--quiet")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert len(rows) == 2 and all(np.isfinite(float(r["object_bce"])) and float(r["object_bce"]) > 0 for r in rows)
    path = tmp_path / "run" / "last.safetensors"
    tuned, start = build_model(checkpoint=path), build_model(checkpoint=sam2_t_checkpoint[1])
    assert tuned.model_type == "sam2.1_hiera_t"
    before, after = start.state_dict(), tuned.state_dict()
    for name in ("mask_decoder.pred_obj_score_head.layers.0.weight", "mask_decoder.conv_s0.weight",
                 "image_encoder.trunk.blocks.0.mlp.layers.0.weight", "no_mem_embed"):
        assert not torch.equal(before[name], after[name]), name
    predictor = Predictor(tuned)
    predictor.set_image(sample_image_path("coffee.png"))
    masks, scores, _ = predictor.predict(np.array([[300, 200]]), np.array([1]))
    assert masks.shape == (3, 400, 600) and np.isfinite(scores).all()


def test_train_cli_runs_from_a_config_file(shard, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[model]\ntype = "tiny"\n[[data]]\npath = "{shard}"\n'
        '[train]\noutput = "run"\nsteps = 1\nbatch_size = 1\nmasks_per_image = 1\n'
        "[recipe]\npoint_rounds = 1\nmask_only_rounds = 0\n"
    )
    out = run("train", cfg, "--quiet")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "last.safetensors").is_file()  # relative to the config file
    # fine-tuning from those weights, named relative to the config file too
    tune = tmp_path / "tune.toml"
    tune.write_text(cfg.read_text().replace('type = "tiny"', 'type = "tiny"\ncheckpoint = "run/last.safetensors"')
                    .replace('output = "run"', 'output = "tuned"'))
    out = run("train", tune, "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "tuned" / "last.json").read_text())["config"]["checkpoint"] == "run/last.safetensors"


def test_a_config_extends_another_key_by_key_with_its_paths_read_from_where_they_are_written(shard, tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(
        '[model]\ntype = "tiny"\ncheckpoint = "w/start.safetensors"\n'
        '[[data]]\npath = "shards/a"\nweight = 0.5\n[[data]]\npath = "/abs/b"\n'
        '[train]\noutput = "run"\nsteps = 7\nlr = 1e-3\nseed = 1\n'
        "[recipe]\npoint_rounds = 2\nfirst_round_weight = 3.0\n"
    )
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.toml"
    child.write_text('extends = "../base.toml"\n[train]\nseed = 5\noutput = "mine"\n[recipe]\niou_weight = 2.0\n')
    cfg = TrainConfig.from_file(child)
    # overridden keys are the child's, the rest the parent's, table by table
    assert (cfg.seed, cfg.steps, cfg.lr) == (5, 7, 1e-3)
    assert (cfg.recipe.iou_weight, cfg.recipe.first_round_weight, cfg.recipe.point_rounds) == (2.0, 3.0, 2)
    # the parent's relative paths still name what they named in the parent's folder; the child's, the child's
    assert cfg.checkpoint_path().resolve() == (tmp_path / "w" / "start.safetensors").resolve()
    assert cfg.out_dir().resolve() == (tmp_path / "sub" / "mine").resolve()
    assert [cfg._path(d["path"]).resolve() for d in cfg.data] == [(tmp_path / "shards" / "a").resolve(), Path("/abs/b")]
    # a child's [[data]] list replaces the parent's whole; extends chains
    grand = tmp_path / "sub" / "grand.toml"
    grand.write_text('extends = "child.toml"\n[[data]]\npath = "own"\n')
    cfg = TrainConfig.from_file(grand)
    assert cfg.data == [{"path": "own"}] and cfg.seed == 5 and cfg.recipe.iou_weight == 2.0
    # a sibling in the same folder keeps the parent's paths as written
    same = tmp_path / "same.toml"
    same.write_text('extends = "base.toml"\n')
    assert TrainConfig.from_file(same).to_json() == TrainConfig.from_file(base).to_json()
    # errors say what is wrong
    loop_a, loop_b = tmp_path / "a.toml", tmp_path / "b.toml"
    loop_a.write_text('extends = "b.toml"\n')
    loop_b.write_text('extends = "a.toml"\n')
    with pytest.raises(ValueError, match="extend each other in a loop: a.toml -> b.toml -> a.toml"):
        TrainConfig.from_file(loop_a)
    for name, text, error, message in [
        ("orphan", 'extends = "gone.toml"\n', FileNotFoundError, "extends 'gone.toml'"),
        ("bad", "extends = 3\n", ValueError, "extends must be the path of another training config"),
        ("typo", 'extends = "base.toml"\n[train]\nstepz = 1\n', ValueError, "unknown training config keys: stepz"),
    ]:
        (tmp_path / f"{name}.toml").write_text(text)
        with pytest.raises(error, match=message):
            TrainConfig.from_file(tmp_path / f"{name}.toml")
    # and the CLI trains from an extending config, writing where the child says
    real = tmp_path / "real.toml"
    real.write_text(
        f'[model]\ntype = "tiny"\n[[data]]\npath = "{shard}"\n'
        '[train]\noutput = "run"\nsteps = 1\nbatch_size = 1\nmasks_per_image = 1\n'
        "[recipe]\npoint_rounds = 1\nmask_only_rounds = 0\n"
    )
    (tmp_path / "sub" / "real2.toml").write_text('extends = "../real.toml"\n[train]\nseed = 3\n')
    out = run("train", tmp_path / "sub" / "real2.toml", "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "last.json").read_text())["config"]["seed"] == 3


def test_coco_reader_takes_polygons_and_rle_and_skips_crowds(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    m = np.zeros((40, 60), np.uint8)
    m[5:15, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": [[10, 20, 40, 20, 40, 35, 10, 35]], "iscrowd": 0},
            {"id": 2, "image_id": 1, "segmentation": rle, "iscrowd": 0},
            {"id": 3, "image_id": 1, "segmentation": rle, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "inst.json").write_text(json.dumps(doc))
    entries = read_coco(tmp_path / "inst.json", tmp_path / "images")
    assert len(entries) == 1 and len(entries[0].rles) == 2
    poly = mask_utils.decode(entries[0].rles[0]).astype(bool)
    assert poly[25, 25] and not poly[5, 5]
    assert np.array_equal(mask_utils.decode(entries[0].rles[1]), m)


def test_training_inputs_are_padded_as_at_inference():
    """The sampler pads raw pixels with black; the model must see the padding that
    `Sam.preprocess` gives at inference (zero after normalising), not normalised black."""
    from promptseg import build_model
    from promptseg.train.data import Batch
    from promptseg.train.loop import _inputs

    model = build_model("tiny")
    s = model.img_size
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (3, s, s // 2)).astype(np.float32), rng.integers(0, 256, (3, s // 3, s)).astype(np.float32)]
    images = torch.zeros(2, 3, s, s)
    for i, c in enumerate(crops):
        images[i, :, : c.shape[1], : c.shape[2]] = torch.from_numpy(c)
    batch = Batch(images, torch.zeros(2, 1, s, s), [c.shape[1:] for c in crops])
    got = _inputs(model, batch, "cpu")
    for i, c in enumerate(crops):
        expected = model.preprocess(torch.from_numpy(c)[None])[0]
        torch.testing.assert_close(got[i], expected)


def test_data_paths_expand_the_home_folder(shard, monkeypatch, tmp_path):
    from promptseg.train.data import read_source

    monkeypatch.setenv("HOME", str(shard.parent))
    entries = read_source({"kind": "sa1b", "path": f"~/{shard.name}"}, tmp_path)
    assert len(entries) == 6


ROOT = REPO
CONFIGS_IN_REPO = sorted(str(p.relative_to(ROOT)) for d in ("configs", "experiments") for p in (ROOT / d).rglob("*.toml"))


@pytest.mark.parametrize("name", CONFIGS_IN_REPO)
def test_the_projects_training_configs_parse_and_name_a_registered_model(name):
    from promptseg.model import CONFIGS

    cfg = TrainConfig.from_file(ROOT / name)
    assert cfg.model in CONFIGS and cfg.data and cfg.steps > cfg.recipe.interactive_from_step >= 0


@pytest.mark.parametrize("model_type", ["vit_t", "vit_tiny_hq"])
def test_fine_tuning_mobilesam_then_evaluating_it(shard, tmp_path, model_type):
    """MobileSAM (`vit_t`) and HQ-SAM on it (`vit_tiny_hq`) from checkpoints in their published
    layout (a plain state dict .pt): `promptseg train` fine-tunes them (the batch-normed TinyViT
    in training mode; HQ-SAM's one mask per prompt), the result loads back as the same type, and
    `promptseg eval` scores it."""
    from helpers import randomize_, scene_folder
    from promptseg import build_model

    start = tmp_path / "start.pt"
    torch.save(randomize_(build_model(model_type), seed=2).state_dict(), start)
    cfg = fine_tune_config(tmp_path / "vt.toml", model_type, start, shard)
    out = run("train", cfg, "--quiet")
    assert out.returncode == 0, out.stderr
    tuned = build_model(checkpoint=tmp_path / "run" / "last.safetensors")
    assert tuned.model_type == model_type
    before, after = build_model(checkpoint=start).state_dict(), tuned.state_dict()
    changed = ["image_encoder.layers.0.blocks.0.conv1.c.weight", "image_encoder.layers.1.blocks.0.attn.attention_biases",
               "mask_decoder.iou_token.weight"]
    if model_type.endswith("_hq"):
        changed += ["mask_decoder.hf_token.weight", "mask_decoder.compress_vit_feat.0.weight",
                    "mask_decoder.embedding_maskfeature.0.weight"]
    for name in changed:
        assert not torch.equal(before[name], after[name]), name
    data = scene_folder(tmp_path / "bench", n=1)
    out = run("eval", data, "--checkpoint", tmp_path / "run" / "last.safetensors", "--baselines", "none",
              "--output", tmp_path / "r.json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    (scores,) = report["overall"].values()
    assert scores["instances"] == 1 and 0 <= scores["box"] <= 1
