"""Evaluation protocols, classical baselines and the `eval` command on real image files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, run, scene_folder
from promptseg.eval.datasets import load_dataset
from promptseg.eval.methods import GrabCutClicksMethod, GrabCutMethod, RandomWalkerMethod
from promptseg.eval.protocols import (
    MAX_CLICKS,
    Instance,
    Method,
    evaluate_instance,
    farthest_interior_point,
    iou,
    next_click,
    summarise,
    tight_box,
)
from promptseg.train.synth import SceneGenerator


def test_farthest_interior_point_and_iou_with_ignored_pixels():
    m = np.zeros((50, 80), bool)
    m[10:31, 20:61] = True
    assert farthest_interior_point(m) == (40, 20)
    edge = np.zeros((20, 20), bool)
    edge[:, :5] = True  # touching the image edge: the edge is boundary too
    assert farthest_interior_point(edge)[0] == 2
    pred = m.copy()
    pred[10:31, 20:30] = False
    ignore = np.zeros_like(m)
    assert iou(pred, m) == pytest.approx(31 / 41)
    ignore[:, :30] = True
    assert iou(pred, m, ignore) == 1.0


def test_next_click_goes_to_the_centre_of_the_largest_error():
    gt = np.zeros((60, 60), bool)
    gt[10:50, 10:50] = True
    pred = gt.copy()
    pred[10:50, 10:20] = False  # missed strip (400 px)
    pred[0:5, 0:60] = True  # wrong strip (300 px)
    x, y, label = next_click(pred, gt, None)
    assert label == 1 and 10 <= x < 20 and 10 <= y < 50
    pred[10:50, 10:20] = True
    x, y, label = next_click(pred, gt, None)
    assert label == 0 and y < 5
    assert next_click(gt, gt, None) is None


class Perfect(Method):
    name = "perfect"

    def __init__(self, gt):
        self.gt = gt

    def set_image(self, image):
        pass

    def clicks(self, points, labels):
        return self.gt, [self.gt]

    def box(self, box):
        return self.gt


class Empty(Perfect):
    def clicks(self, points, labels):
        z = np.zeros_like(self.gt)
        return z, [z]


def test_protocol_scores_for_a_perfect_and_an_empty_method():
    gt = np.zeros((40, 40), bool)
    gt[5:30, 8:20] = True
    inst = Instance("x", "d", "x.png", gt)
    good = evaluate_instance(Perfect(gt), inst, {"box", "click", "noc"})
    assert good["box"] == 1.0 and good["click1"] == 1.0 and good["noc85"] == 1 and good["noc90"] == 1
    bad = evaluate_instance(Empty(gt), inst, {"click", "noc"})
    assert bad["click1"] == 0.0 and bad["noc85"] == MAX_CLICKS and len(bad["ious"]) == MAX_CLICKS
    s = summarise([good, bad])
    assert s["noc85"] == (1 + MAX_CLICKS) / 2 and s["instances"] == 2


def test_classical_baselines_segment_a_clear_object():
    img = np.full((120, 160, 3), 40, np.uint8)
    gt = np.zeros((120, 160), bool)
    gt[30:90, 50:120] = True
    img[gt] = (220, 200, 30)
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    inst = Instance("r", "d", "r.png", gt)
    gc = GrabCutMethod()
    gc.set_image(img)
    assert evaluate_instance(gc, inst, {"box"})["box"] > 0.9
    rw = RandomWalkerMethod()
    rw.set_image(img)
    assert evaluate_instance(rw, inst, {"click"})["click1"] > 0.9
    gcc = GrabCutClicksMethod()
    gcc.set_image(img)
    scores = evaluate_instance(gcc, inst, {"click", "noc"})
    assert scores["click1"] > 0.9 and scores["noc90"] == 1 and "box" not in evaluate_instance(gcc, inst, {"box"})


def test_datasets_load_from_mask_folders_and_sa1b(tmp_path):
    scene_folder(tmp_path / "bench" / "one")
    [(name, insts)] = load_dataset(tmp_path / "bench" / "one")
    assert name == "one" and len(insts) == 3
    assert insts[0].ignore is not None and insts[0].ignore.any() and insts[1].ignore is None
    assert [n for n, _ in load_dataset(tmp_path / "bench")] == ["one"]
    from promptseg.train.synth import write_shard

    list(write_shard(tmp_path / "sa", 2, seed=1))
    [(name, insts)] = load_dataset(tmp_path / "sa", per_image=2)
    assert name == "sa" and len(insts) == 4
    with pytest.raises(ValueError, match="not an evaluation dataset"):
        load_dataset(tmp_path / "bench" / "one" / "images")


def test_eval_cli_prints_table_writes_json_and_pictures(tmp_path):
    data = scene_folder(tmp_path / "bench")
    out = run("eval", data, "--output", tmp_path / "r.json", "--pictures", tmp_path / "ex.png", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "NoC@85" in out.stdout and "grabcut" in out.stdout and "random_walker" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    ours = report["overall"]["promptseg tiny"]
    assert ours["instances"] == 3 and 0 <= ours["box"] <= 1 and 1 <= ours["noc85"] <= MAX_CLICKS
    assert "box" in report["overall"]["grabcut"] and "click1" not in report["overall"]["grabcut"]
    assert "noc90" in report["overall"]["random_walker"]
    pic = Image.open(tmp_path / "ex.png")
    assert pic.width > 500 and pic.height > 200


def test_eval_cli_errors(tmp_path):
    out = run("eval", tmp_path / "nothing")
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = run("eval", tmp_path, "--protocols", "clicks")
    assert out.returncode == 1 and "--protocols" in out.stderr
    out = run("eval", tmp_path, "--baselines", "grabcut-click")
    assert out.returncode == 1 and "grabcut-clicks" in out.stderr and "Traceback" not in out.stderr
    data = scene_folder(tmp_path / "b", n=1)
    (data / "images" / "s0.jpg").write_bytes(b"not an image")
    out = run("eval", data, "--baselines", "none", "--quiet")
    assert out.returncode == 1 and "skipped" in out.stderr and "s0.jpg" in out.stderr


def test_grabcut_baseline_repeats_itself_whatever_opencvs_rng_did_before():
    import cv2


    gc = GrabCutMethod()
    answers = []
    for i in range(4):
        img, masks, kinds = SceneGenerator(5).scene(i)
        obj = max((m for m, k in zip(masks, kinds) if k == "object"), key=lambda a: a.sum())
        gc.set_image(img)
        first = gc.box(tight_box(obj))
        cv2.randu(np.empty((1000, 3)), 0, 1)  # moves OpenCV's global RNG, as any other code may
        answers.append(np.array_equal(first, gc.box(tight_box(obj))))
    assert all(answers), answers


def test_candidate_choice_script_scores_pick_rules_against_the_truth(tmp_path):
    """experiments/candidate_choice.py (the card's "Choosing among the candidates"): SAM's rule is the
    reference row, the oracle is never below it, and every rule's row parses."""
    data = scene_folder(tmp_path / "scenes", n=4)
    script = REPO / "experiments" / "candidate_choice.py"
    out = subprocess.run([sys.executable, str(script), str(data), "--flip"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"{data} (4 instances, flip)"
    rows = {line[:34].strip(): [float(v) for v in line[34:].replace("(SE", "").replace(")", "").split()]
            for line in lines[1:]}
    assert rows["predicted IoU (SAM)"][1:] == [0.0, 0.0]
    assert rows["oracle (best of 3)"][0] >= rows["predicted IoU (SAM)"][0] > 0
    assert all(0 <= r[0] <= 1 for r in rows.values()) and len(rows) == 16
