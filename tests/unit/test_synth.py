"""Synthetic scenes: deterministic by seed, exact nested masks, SA-1B shards that read back."""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils

from helpers import run
from promptseg.io import read_image
from promptseg.train.data import read_sa1b
from promptseg.train.synth import SceneGenerator, write_shard


def test_scenes_are_a_function_of_seed_and_index():
    a, b, c = SceneGenerator(3), SceneGenerator(3), SceneGenerator(4)
    img1, masks1, kinds1 = a.scene(7)
    img2, masks2, kinds2 = b.scene(7)
    assert np.array_equal(img1, img2) and kinds1 == kinds2
    assert all(np.array_equal(x, y) for x, y in zip(masks1, masks2))
    assert not np.array_equal(img1, a.scene(8)[0])
    assert not np.array_equal(img1, c.scene(7)[0])


def test_masks_are_exact_visible_regions_with_parts_inside_objects():
    gen = SceneGenerator(0)
    seen_parts = 0
    for index in range(12):
        img, masks, kinds = gen.scene(index)
        assert img.dtype == np.uint8 and img.ndim == 3
        assert all(m.shape == img.shape[:2] and m.dtype == bool for m in masks)
        top = [m for m, k in zip(masks, kinds) if k != "part"]
        # objects and background regions are visible regions of one paint order: disjoint
        for i in range(len(top)):
            for j in range(i + 1, len(top)):
                assert not (top[i] & top[j]).any()
        # a part is listed right before its object and lies inside it
        for i, k in enumerate(kinds):
            if k == "part":
                seen_parts += 1
                owner = next(masks[j] for j in range(i + 1, len(kinds)) if kinds[j] != "part")
                assert not (masks[i] & ~owner).any()
    assert seen_parts > 0


def test_shard_reads_back_as_sa1b(tmp_path):
    paths = list(write_shard(tmp_path, 3, seed=5))
    assert [p.name for p in paths] == [f"sa_5_{i:06d}.jpg" for i in range(3)]
    entries = read_sa1b(tmp_path)
    assert len(entries) == 3
    gen = SceneGenerator(5)
    _, masks, kinds = gen.scene(1)
    doc = json.loads((tmp_path / "sa_5_000001.json").read_text())
    assert [a["kind"] for a in doc["annotations"]] == kinds
    for ann, m in zip(doc["annotations"], masks):
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), m)
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(m)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min())
    assert read_image(paths[1]).shape[:2] == masks[0].shape


def test_synth_cli_writes_and_resumes(tmp_path):
    out = run("synth", tmp_path / "shard", "--count", "2", "--seed", "9", "--quiet")
    assert out.returncode == 0, out.stderr
    files = sorted(p.name for p in (tmp_path / "shard").iterdir())
    assert files == ["sa_9_000000.jpg", "sa_9_000000.json", "sa_9_000001.jpg", "sa_9_000001.json"]
    before = (tmp_path / "shard" / "sa_9_000000.json").stat().st_mtime_ns
    out = run("synth", tmp_path / "shard", "--count", "3", "--seed", "9", "--quiet")
    assert out.returncode == 0
    assert (tmp_path / "shard" / "sa_9_000000.json").stat().st_mtime_ns == before  # kept, not rewritten
    assert (tmp_path / "shard" / "sa_9_000002.json").is_file()
