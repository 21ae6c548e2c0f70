"""Text prompts on the command line: `promptseg segment IMAGE --text "cup. spoon."` (one image)
and `promptseg label INPUT... --text "car. person."` (a dataset, on either engine)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from ..cpu import set_threads
from .common import (
    BACKEND_HELP,
    FLIP_HELP,
    INPUTS_HELP,
    MODEL_HELP,
    check_backend,
    check_output_dir,
    engine_options,
    fail,
    finish_job,
    gather_inputs,
    start_job,
    threads_option,
    user_errors,
)

_E = engine_options()

TEXT_HELP = "Class names to find, separated by dots: 'cup. spoon.' (needs the text extra)."
DETECTOR_HELP = ("Detector: grounding-dino-tiny (default), grounding-dino-base, owlv2, a Hugging Face hub id, "
                 "or a folder holding a saved model.")
BOX_THRESHOLD_HELP = "Keep detections scoring above this (0-1)."
TEXT_THRESHOLD_HELP = "Grounding DINO: how well a box must match a class name (0-1)."


def check_text_options(text: str, box_threshold: float, text_threshold: float) -> list[str]:
    """The class names of --text, and the thresholds checked (ValueError naming the bad one)."""
    from ..text import check_threshold, parse_classes

    check_threshold("--box-threshold", box_threshold)
    check_threshold("--text-threshold", text_threshold)
    return parse_classes(text)


def segment_text(image: Path, text: str, detector: str | None, box_threshold: float, text_threshold: float,
                 threads: int | None, where_prompts: bool, predictor_options: dict, output: Path,
                 overlay_path: Path | None, as_json: bool, quiet: bool) -> None:
    """`segment --text`: every instance of the class names in IMAGE, as OUTPUT/NNN_LABEL.png, a
    labelled overlay (OUTPUT/overlay.png unless --overlay names one), and --json records.
    `where_prompts`: whether segment's point, box, embedding, multimask or refine options were
    given too, which --text does not take."""
    import time

    from ..io import overlay, read_image, write_image, write_mask_png
    from ..predict import load_predictor
    from ..progress import status
    from ..text import TextPredictor, caption, load_detector

    if where_prompts:
        fail("--text finds its own boxes and answers with SAM's masks: give it without --point, --box, "
             "--embedding, --multimask or --refine")
    with user_errors():
        set_threads(threads)
        classes = check_text_options(text, box_threshold, text_threshold)
        check_output_dir(output)
        rgb = read_image(image)
        with status("loading models", quiet):
            predictor = load_predictor(**predictor_options)
            found = TextPredictor(predictor, load_detector(detector), box_threshold, text_threshold)
        t0 = time.perf_counter()
        with status(f"embedding {image.name}", quiet):
            found.set_image(rgb)
        t_embed = time.perf_counter() - t0
        t0 = time.perf_counter()
        with status(f"finding {', '.join(classes)}", quiet):
            records = found.predict_text(classes)
        t_text = time.perf_counter() - t0
    with user_errors():
        output.mkdir(parents=True, exist_ok=True)
        for old in output.glob("[0-9][0-9][0-9]_*.png"):  # an earlier run's masks
            old.unlink()
        for i, rec in enumerate(records):
            rec["path"] = str(output / f"{i:03d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', rec['label'])}.png")
            write_mask_png(rec["segmentation"], rec["path"])
        picture = overlay_path or output / "overlay.png"
        write_image(overlay(rgb, [r["segmentation"] for r in records],
                            captions=[caption(r) for r in records]), picture)
    listed = [{k: v for k, v in r.items() if k != "segmentation"} for r in records]
    if as_json:
        typer.echo(json.dumps({"image": str(image), "classes": classes, "objects": listed, "overlay": str(picture),
                               "seconds": {"embed": round(t_embed, 3), "text": round(t_text, 3)}}, indent=2))
    elif not quiet:
        for r in listed:
            typer.echo(f"{r['label']}: score {r['score']:.3f}, mask score {r['predicted_iou']:.3f}, {r['area']} px "
                       f"-> {r['path']}", err=True)
        typer.echo(f"{len(listed)} objects of {', '.join(classes)}; overlay {picture}", err=True)


def label(
    inputs: list[str] | None = typer.Argument(None, help=INPUTS_HELP),
    text: str = typer.Option(..., "--text", "-t", help=TEXT_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the results."),
    fmt: str = typer.Option("coco", "--format", "-f", help="coco (one annotations.json), sa1b (JSON per image) "
                            "or png."),
    detector: str | None = typer.Option(None, "--detector", "-d", help=DETECTOR_HELP),
    box_threshold: float = typer.Option(0.35, "--box-threshold", help=BOX_THRESHOLD_HELP),
    text_threshold: float = typer.Option(0.25, "--text-threshold", help=TEXT_THRESHOLD_HELP),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file."),
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Write a labelled picture per image."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder written by `promptseg export`."),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP),
    manifest: Path | None = _E["manifest"],
    engine: str = _E["engine"],
    ray_address: str | None = _E["ray_address"],
    workers: str = _E["workers"],
    cpus_per_worker: float = _E["cpus_per_worker"],
    gpus_per_worker: float = _E["gpus_per_worker"],
    batch_size: int = _E["batch_size"],
    threads: int | None = threads_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Label a dataset by class names: each image's objects of --text, found by a detector and
    segmented, into COCO instances (a category per class name, ids in the order given), SA-1B
    JSON or PNG masks.

    Re-running skips images already done; unreadable images are reported, skipped, and make
    the exit status non-zero. `--engine ray` runs the same job on a Ray cluster."""
    from ..engine.jobs import JobSpec
    from ..engine.local import FORMATS
    from ..engine.run import run_job
    from ..predict import load_predictor

    if fmt not in FORMATS:
        fail(f"--format must be coco, sa1b or png, got {fmt!r}")
    with user_errors():
        classes = check_text_options(text, box_threshold, text_threshold)
    paths, missing = gather_inputs(inputs, manifest)
    with user_errors():
        ray = start_job(threads, output, engine, ray_address, workers, cpus_per_worker, gpus_per_worker, batch_size)
        check_backend(backend)
        spec = JobSpec("label", str(output), fmt=fmt, overlays=overlays, model=model,
                       text={"classes": classes, "detector": detector, "box_threshold": box_threshold,
                             "text_threshold": text_threshold},
                       checkpoint=None if checkpoint is None else str(checkpoint), backend=backend, flip=flip,
                       onnx_dir=None if onnx_dir is None else str(onnx_dir))
        process = None
        if ray is None:  # built here, so a bad model or detector fails before any image
            process = spec.processor(load_predictor(model, checkpoint=checkpoint, backend=backend, flip=flip,
                                                    onnx_dir=onnx_dir))
        summary = run_job(spec, paths, engine, ray, quiet, "label", process=process)
    finish_job(summary, missing, quiet, lambda failed: (
        f"{len(paths)} images: {summary.done} labelled ({summary.masks} objects of {len(classes)} classes), "
        f"{summary.skipped} already done, {failed} failed; results in {output}"))
