"""The `promptseg` command, run as a user runs it: a separate process on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import run
from promptseg import sample_image_path


def test_segment_writes_mask_overlay_and_json(tmp_path, vit_b_checkpoint, vit_b_pair):
    from promptseg import Predictor

    image = sample_image_path("coffee.png")
    out = run(
        "segment",
        image,
        "--point",
        "300,200",
        "--point",
        "120,80,0",
        "--checkpoint",
        vit_b_checkpoint,
        "-o",
        tmp_path / "m.png",
        "--overlay",
        tmp_path / "o.png",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["model"] == "vit_b" and summary["size"] == {"width": 600, "height": 400}
    mask = np.asarray(Image.open(tmp_path / "m.png"))
    assert mask.shape == (400, 600) and set(np.unique(mask)) <= {0, 255}
    assert summary["masks"][0]["area"] == int((mask > 0).sum())
    # the file holds exactly what the Python API gives for the same prompts
    pred = Predictor(vit_b_pair[1])
    pred.set_image(image)
    masks, scores, _ = pred.predict(np.array([[300, 200], [120, 80]]), np.array([1, 0]), multimask_output=False)
    assert ((mask > 0) == masks[0]).mean() > 0.9999
    assert summary["masks"][0]["score"] == pytest.approx(float(scores[0]), abs=1e-4)
    ov = np.asarray(Image.open(tmp_path / "o.png"))
    assert ov.shape == (400, 600, 3)
    photo = np.asarray(Image.open(image))
    changed = np.abs(ov.astype(int) - photo).sum(-1) > 0
    assert changed[masks[0]].mean() > 0.9  # the mask is drawn where it is


def test_segment_multimask_writes_three(tmp_path, vit_b_checkpoint):
    out = run(
        "segment",
        sample_image_path(),
        "-p",
        "300,200",
        "-c",
        vit_b_checkpoint,
        "-o",
        tmp_path / "m.png",
        "--multimask",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_0.png", "m_1.png", "m_2.png"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["segment", "missing.jpg", "-p", "1,1", "--model", "vit_b"], "image file not found"),
        (["segment", "{img}", "--model", "vit_b"], "give at least one --point"),
        (["segment", "{img}", "-p", "1;2", "--model", "vit_b"], "not a list of numbers"),
        (["segment", "{img}", "-p", "1,2,3,4", "--model", "vit_b"], "X,Y or X,Y,LABEL"),
        (["segment", "{img}", "-b", "1,2", "--model", "vit_b"], "X0,Y0,X1,Y1"),
        (["segment", "{img}", "-p", "1,1", "--model", "vit_x"], "unknown model"),
        (["segment", "{img}", "-p", "1,1", "--model", "tiny_s8"], "no bundled or official weights; pass the trained"),
        (["segment", "{img}", "-p", "1,1", "--model", "vit_b"], "promptseg download vit_b"),
        (["segment", "{img}", "-p", "1,1", "-c", "nothing.pth"], "checkpoint not found"),
        (["download", "vit_q"], "no official weights"),
    ],
)
def test_errors_are_one_line(tmp_path, args, message):
    args = [a.replace("{img}", str(sample_image_path())) for a in args]
    out = run(*args, env={"PROMPTSEG_HOME": str(tmp_path / "empty-cache")})
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert message in lines[0]


def test_point_outside_image_is_reported(tmp_path, vit_b_checkpoint):
    out = run("segment", sample_image_path(), "-p", "900,10", "-c", vit_b_checkpoint, "-o", tmp_path / "m.png")
    assert out.returncode == 1
    assert "outside the 600x400 image" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.png").exists()
