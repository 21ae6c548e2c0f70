"""Batch jobs and the CLI as a careless user meets them: a folder with a decompression bomb, a
truncated file and files of the same stem; a run killed with SIGKILL while writing; output paths
and options that cannot work. Every good input gets exactly one output, bad ones are reported,
and every mistake ends in one line that says what to do, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import run
from promptseg import sample_image_path
from promptseg.cli import app
from promptseg.masks import decode_coco_rle

COFFEE = sample_image_path("coffee.png")
FAST = ("--points-per-side", "4", "--quiet")


def messy_folder(root: Path) -> Path:
    """Good photos (two sharing the stem `photo`, a third in a subfolder of the same name),
    a decompression bomb and a truncated PNG."""
    root.mkdir(parents=True)
    photo = Image.open(COFFEE).convert("RGB").resize((120, 80))
    photo.save(root / "photo.png")
    photo.transpose(Image.FLIP_LEFT_RIGHT).save(root / "photo.jpg", quality=95)
    photo.transpose(Image.FLIP_TOP_BOTTOM).save(root / "zebra.png")
    Image.new("1", (20000, 10000)).save(root / "bomb.png")  # 200 MP in a few KB
    (root / "cut.png").write_bytes((root / "photo.png").read_bytes()[:3000])
    return root


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("fmt", ["sa1b", "coco"])
def test_everything_over_a_messy_folder_keeps_going_and_loses_nothing(tmp_path, fmt):
    folder = messy_folder(tmp_path / "in")
    out = tmp_path / "out"
    first = run("everything", folder, "-o", out, "-f", fmt, *FAST)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    failed = [line for line in first.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2 and any("bomb.png" in f and "decompression bomb" in f for f in failed), failed
    assert any("cut.png" in f and "truncated" in f for f in failed), failed
    docs = sorted(out.glob("*.json") if fmt == "sa1b" else (out / ".parts").glob("*.json"))
    assert [d.stem for d in docs] == ["photo_jpg", "photo_png", "zebra"]
    sources = {json.loads(d.read_text())["image"]["file_name"] for d in docs}
    assert sources == {"photo.png", "photo.jpg", "zebra.png"}
    if fmt == "coco":
        coco = json.loads((out / "annotations.json").read_text())
        by_name = {im["file_name"]: im["id"] for im in coco["images"]}
        assert len(by_name) == 3

        def masks_of(name):
            return [decode_coco_rle(a["segmentation"]) for a in coco["annotations"] if a["image_id"] == by_name[name]]

        png, jpg = masks_of("photo.png"), masks_of("photo.jpg")
        assert png and jpg and not all(np.array_equal(a, b) for a, b in zip(png, jpg))  # each its own masks
    # a re-run skips what is done, reports the bad files again, and writes nothing new
    stamps = {d: d.stat().st_mtime_ns for d in docs}
    again = run("everything", folder, "-o", out, "-f", fmt, "--points-per-side", "4")
    assert again.returncode == 1 and "3 already done, 2 failed" in again.stderr, again.stderr
    assert {d: d.stat().st_mtime_ns for d in docs} == stamps


def test_a_rerun_never_takes_another_files_output_for_its_own(tmp_path):
    folder = messy_folder(tmp_path / "in")
    for bad in ("bomb.png", "cut.png"):
        (folder / bad).unlink()
    out = tmp_path / "out"
    assert run("everything", folder, "-o", out, *FAST).returncode == 0
    before = (out / "zebra.json").read_text()
    Image.open(folder / "photo.png").rotate(90, expand=True).save(folder / "zebra.png")  # another photo, same name
    again = run("everything", folder, "-o", out, *FAST)
    assert again.returncode == 1 and "zebra.json was made from another file" in again.stderr, again.stderr
    assert (out / "zebra.json").read_text() == before  # kept, not overwritten


KILLED_WRITER = """
import os, sys, time
real = os.replace
def stalled(src, dst, *a, **k):
    if str(dst).endswith(("zebra.json", "zebra/masks.json")):
        time.sleep(600)  # killed here: the image's JSON written to its temporary file, not yet renamed
    return real(src, dst, *a, **k)
os.replace = stalled
from promptseg.cli import main
sys.argv = ["promptseg", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("fmt", ["sa1b", "png"])
def test_a_run_killed_while_writing_leaves_nothing_a_rerun_does_not_finish_and_clean(tmp_path, fmt):
    folder = messy_folder(tmp_path / "in")
    for bad in ("bomb.png", "cut.png"):
        (folder / bad).unlink()
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, "everything", str(folder), "-o", str(out),
                             "-f", fmt, *FAST])
    stalled = ".zebra.json.*.partial" if fmt == "sa1b" else "zebra/.masks.json.*.partial"
    deadline = time.monotonic() + 120
    while not list(out.glob(stalled)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(out.glob(stalled)), "the writer never reached the last image's JSON"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_marker = "{}.json" if fmt == "sa1b" else "{}/masks.json"
    assert not (out / done_marker.format("zebra")).exists()

    again = run("everything", folder, "-o", out, "-f", fmt, "--points-per-side", "4")
    assert again.returncode == 0 and "1 segmented" in again.stderr and "2 already done" in again.stderr, again.stderr
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "debris left"
    for name in ("photo_png", "photo_jpg", "zebra"):
        doc = json.loads((out / done_marker.format(name)).read_text())
        assert doc["image"]["source_sha256"] and doc["annotations"] is not None
        if fmt == "png":
            masks = sorted(p.name for p in (out / name).glob("mask_*.png"))
            assert masks == [f"mask_{i:03d}.png" for i in range(len(doc["annotations"]))]


def test_segment_and_everything_say_in_one_line_what_is_wrong(tmp_path):
    folder = messy_folder(tmp_path / "in")
    photo = folder / "photo.png"
    (tmp_path / "afile").write_text("x")
    cases = [
        (("segment", photo, "-p", "10,10", "-o", tmp_path), ("is a folder",)),
        (("segment", photo, "-p", "10,10", "-o", tmp_path / "afile" / "m.png"), ("is a file, not a folder",)),
        (("segment", photo, "-p", "10,10", "-o", "/proc/promptseg/m.png"), ("cannot write in",)),
        (("segment", photo, "-p", "10,10,inf"), ("not a finite number",)),
        (("segment", photo, "-p", "10,inf"), ("not a finite number",)),
        (("segment", photo, "-p", "10,10,0.5"), ("label 0.5",)),
        (("segment", folder / "bomb.png", "-p", "10,10"), ("decompression bomb",)),
        (("segment", folder / "cut.png", "-p", "10,10"), ("truncated",)),
        (("segment", photo, "-p", "10,10", "--threads", "0"), ("threads",)),
        (("everything", photo, "-o", tmp_path / "afile"), ("is a file",)),
        (("everything", photo, "-o", tmp_path / "e", "--crop-overlap-ratio", "1.5"), ("crop_overlap_ratio",)),
        (("everything", photo, "-o", tmp_path / "e", "--points-per-side", "100000"), ("points_per_side",)),
        (("everything", photo, "-o", tmp_path / "e", "--points-per-side", "4", "--crop-n-layers", "3",
          "--crop-n-points-downscale-factor", "2"), ("leaves no clicks",)),
    ]
    runner = CliRunner()
    for args, words in cases:  # in this process: each ends before any model work, or just after loading
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        one_line_error(subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr), *words)
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())  # refused before any work
    ok = run("segment", photo, "-p", "60,40", "--threads", "1", "-o", tmp_path / "m.png", "--quiet")
    assert ok.returncode == 0 and (tmp_path / "m.png").exists(), ok.stderr
