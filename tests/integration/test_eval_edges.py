"""The zero-shot edge task end to end: boundary datasets (per-annotator PNGs and BSDS .mat files),
the runner, and `promptseg eval --task edges` on real image files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import boundary_folder, coco_file, run
from promptseg.eval.edge_task import QUOTED, edge_table, evaluate_edges, load_boundary_dataset


@pytest.mark.parametrize("mat", [False, True])
def test_boundary_datasets_load_every_annotator(tmp_path, mat):
    data = boundary_folder(tmp_path / "bsds", mat=mat)
    images = load_boundary_dataset(data)
    assert [i.stem for i in images] == ["100", "101"]
    gts = images[0].boundaries()
    assert len(gts) == 2 and gts[0].dtype == bool and gts[0].sum() > gts[1].sum() > 50
    assert gts[0].shape == np.asarray(Image.open(images[0].image_path)).shape[:2]


def test_boundary_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_boundary_dataset(tmp_path / "none")
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="not a boundary dataset"):
        load_boundary_dataset(tmp_path)
    (tmp_path / "groundTruth").mkdir()
    (tmp_path / "groundTruth" / "1.mat").write_bytes(b"not a mat file")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "1.png")
    [item] = load_boundary_dataset(tmp_path)
    with pytest.raises(ValueError, match="groundTruth"):
        item.boundaries()


def test_a_method_that_draws_the_annotated_boundaries_scores_one(tmp_path):
    data = boundary_folder(tmp_path / "bsds")
    images = load_boundary_dataset(data)
    for item in images:
        every = item.boundaries()[0]  # annotator 0's outlines hold annotator 1's
        report = evaluate_edges([item], [("perfect", lambda image, m=every: m.astype(np.float32))], levels=9)
        scores = report["methods"]["perfect"]
        assert scores["ODS"] > 0.99 and scores["OIS"] > 0.99 and min(scores["curve"]["precision"]) > 0.99
        # and a map that misses the largest object's outline loses recall on both annotators
        missing = every & ~item.boundaries()[1]
        report = evaluate_edges([item], [("partial", lambda image, m=missing: m.astype(np.float32))], levels=9)
        assert report["methods"]["partial"]["ODS"] < 0.9


def test_eval_edges_cli_end_to_end(tmp_path):
    data = boundary_folder(tmp_path / "bsds", n=3)
    (data / "images" / "101.jpg").write_bytes(b"not an image")  # skipped and reported, the rest scored
    out = run("eval", "--task", "edges", data, "--thresholds", "19", "-o", tmp_path / "r.json",
              "--pictures", tmp_path / "pr.png", "--quiet")
    assert out.returncode == 1, out.stderr
    assert "skipped" in out.stderr and "101.jpg" in out.stderr and "Traceback" not in out.stderr
    for row in ("promptseg tiny", "Canny", "Sobel", *QUOTED):
        assert row in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 2 and report["thresholds"] == 19 and len(report["errors"]) == 1
    for name in ("promptseg tiny", "Canny", "Sobel"):
        m = report["methods"][name]
        assert 0.05 < m["ODS"] <= 1 and 0 <= m["AP"] <= 1 and len(m["curve"]["recall"]) == 19
        assert [p["image"] for p in m["per_image"]] == ["100", "102"]
    # clean synthetic outlines: gradients find most of them
    assert report["methods"]["Sobel"]["R50"] > 0.3
    pic = Image.open(tmp_path / "pr.png")
    assert pic.width > 300 and pic.height > 300
    assert "SAM ViT-H (quoted)" in edge_table(report)


def test_eval_edges_cli_errors(tmp_path):
    data = boundary_folder(tmp_path / "bsds", n=1)
    out = run("eval", "--task", "edge", data)
    assert out.returncode == 1 and "--task" in out.stderr and "Traceback" not in out.stderr
    out = run("eval", "--task", "edges", data, "--flip")
    assert out.returncode == 1 and "--flip: for the interactive task only" in out.stderr
    out = run("eval", "--task", "edges", data, "--baselines", "grabcut")
    assert out.returncode == 1 and "canny, sobel" in out.stderr
    out = run("eval", "--task", "edges", tmp_path / "nothing")
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = run("eval", "--task", "edges", tmp_path)
    assert out.returncode == 1 and "not a boundary dataset" in out.stderr


def test_scores_agree_with_the_bsds_benchmarks_own_matcher_on_a_real_photo():
    """pyEdgeEval wraps the BSDS benchmark's C++ pixel correspondence (an approximate min-cost
    assignment with outliers, and its own thinning); ours is an exact maximum matching with
    scikit-image's thinning. On a real photo's Sobel map against two line maps drawn at other
    scales (Canny at sigma 2 and 3), the measures agree within 0.005 (0.0005 when written)."""
    from pyEdgeEval.common.binary_label.evaluate_boundaries import evaluate_boundaries_threshold_multiple_gts

    from promptseg import read_image, sample_image_path
    from promptseg.eval.boundaries import edge_scores, image_counts, thresholds
    from promptseg.eval.edges import canny_edge_map, sobel_edge_map

    image = read_image(sample_image_path())
    edges = sobel_edge_map(image)
    annotators = [canny_edge_map(image, sigma=s, levels=8) >= 0.5 for s in (2.0, 3.0)]
    levels = thresholds(19)
    ours = image_counts(edges, annotators, levels)
    cr, sr, cp, sp = evaluate_boundaries_threshold_multiple_gts(levels, edges.astype(np.float64),
                                                                np.stack(annotators), max_dist=0.0075)
    theirs = np.stack([cp, sp, cr, sr], 1)
    assert np.array_equal(ours[:, 3], theirs[:, 3])  # the same annotator pixels
    assert np.allclose(ours[:, 1], theirs[:, 1], rtol=0.03, atol=2)  # thinning: nearly the same predicted pixels
    # a maximum matching finds at least as many annotator pixels as the benchmark's assignment
    assert np.all(ours[:, 2] >= theirs[:, 2] - 2) and np.allclose(ours[:, 2], theirs[:, 2], rtol=0.02, atol=2)
    a, b = edge_scores([ours], levels), edge_scores([theirs], levels)
    for m in ("ods", "ois", "ap", "r50"):
        assert abs(getattr(a, m) - getattr(b, m)) <= 0.005, (m, getattr(a, m), getattr(b, m))


def test_every_zero_shot_task_runs_another_model_family(tmp_path, sam2_t_checkpoint):
    """A SAM 2.1 checkpoint (random weights, Meta's file layout) through the three tasks."""
    path = sam2_t_checkpoint[1]
    edges = boundary_folder(tmp_path / "bsds", n=1)
    out = run("eval", "--task", "edges", edges, "--checkpoint", path, "--thresholds", "9", "--baselines", "none",
              "-o", tmp_path / "e.json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert list(report["methods"]) == ["promptseg sam2.1_hiera_t"] and report["images"] == 1
    coco, _ = coco_file(tmp_path / "coco", n=1)
    for task, extra in (("instances", ()), ("proposals", ("--points-per-side", "4"))):
        out = run("eval", "--task", task, coco, "--checkpoint", path, *extra, "-o", tmp_path / f"{task}.json", "--quiet")
        assert out.returncode == 0, out.stderr
        report = json.loads((tmp_path / f"{task}.json").read_text())
        assert report["model"]["type"] == "sam2.1_hiera_t" and report["images"] == 1 and "scores" in report
