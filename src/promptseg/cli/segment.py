"""`promptseg segment`: masks for clicks and a box on one image."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

from ..cpu import set_threads
from .common import (
    BACKEND_HELP,
    FLIP_HELP,
    HQ_TOKEN_ONLY_HELP,
    MODEL_HELP,
    REFINE_HELP,
    UserError,
    check_backend,
    check_output_file,
    check_refine,
    parse_floats,
    threads_option,
    user_errors,
)
from .text import BOX_THRESHOLD_HELP, DETECTOR_HELP, TEXT_HELP, TEXT_THRESHOLD_HELP, segment_text


def segment(
    image: Path = typer.Argument(..., help="Image file to segment."),
    point: list[str] = typer.Option(
        [], "--point", "-p", help="X,Y[,LABEL] in pixels; LABEL 1 foreground (default), 0 background. Repeatable."
    ),
    box: str | None = typer.Option(None, "--box", "-b", help="X0,Y0,X1,Y1 in pixels."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file (.pth or .safetensors)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Mask PNG to write [default: mask.png]; "
                                       "with --text, a folder [default: text_masks]."),
    overlay_path: Path | None = typer.Option(
        None, "--overlay", help="Also write a picture of the mask over the image."
    ),
    multimask: bool = typer.Option(False, "--multimask", help="Write all three candidate masks (OUTPUT_0.png ...)."),
    hq_token_only: bool = typer.Option(False, "--hq-token-only", help=HQ_TOKEN_ONLY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (files, scores, areas) on stdout."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder written by `promptseg export`."),
    refine: str | None = typer.Option(
        None, "--refine", help=REFINE_HELP + " [default: the one chosen for the model's weights: grabcut for the "
        "bundled model, none for Meta's]"),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP),
    embedding: Path | None = typer.Option(
        None, "--embedding", help="IMAGE's embedding file, from `promptseg embed` (the encoder does not run)."),
    text: str | None = typer.Option(None, "--text", "-t", help=TEXT_HELP + " One mask per object found."),
    detector: str | None = typer.Option(None, "--detector", "-d", help=DETECTOR_HELP),
    box_threshold: float = typer.Option(0.35, "--box-threshold", help=BOX_THRESHOLD_HELP),
    text_threshold: float = typer.Option(0.25, "--text-threshold", help=TEXT_THRESHOLD_HELP),
    threads: int | None = threads_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Segment IMAGE from point and/or box prompts and write the mask as a PNG; or, with --text,
    every object of the class names given, a mask each, with their labels and scores."""
    if text is not None:  # class names instead of where-prompts
        where = bool(point or box or embedding is not None or multimask or refine not in (None, "none"))
        return segment_text(image, text, detector, box_threshold, text_threshold, threads, where,
                            dict(model=model, checkpoint=checkpoint, backend=backend, flip=flip, onnx_dir=onnx_dir),
                            output or Path("text_masks"), overlay_path, as_json, quiet)
    output = output or Path("mask.png")
    from ..io import overlay, read_image, write_image
    from ..predict import load_predictor
    from ..progress import status
    from ..prompts import check_prompts
    from ..refine import answer_masks

    with user_errors():
        set_threads(threads)
        coords, labels, box_arr = _parse_prompts(point, box)
        check_output_file(output)
        if overlay_path is not None:
            check_output_file(overlay_path, "--overlay")
        rgb = read_image(image)
        check_prompts(rgb.shape[:2], coords, labels, box_arr)  # fail before the slow part
        chosen = check_refine(refine)
        check_backend(backend)
        with status("loading model", quiet):
            predictor = load_predictor(model, checkpoint=checkpoint, backend=backend, flip=flip, onnx_dir=onnx_dir)
        if refine is None:
            chosen = predictor.settings.refine
        t0 = time.perf_counter()
        if embedding is not None:
            _load_embedding(predictor, embedding, rgb.shape[:2], image)
        else:
            with status(f"embedding {image.name}", quiet):
                predictor.set_image(rgb)
        t_embed = time.perf_counter() - t0
        # One click is ambiguous: ask for three candidates and keep the best, as SAM's demo does.
        ambiguous = coords is not None and len(coords) == 1 and box_arr is None
        t0 = time.perf_counter()
        logits, scores, _ = predictor.predict(coords, labels, box_arr, multimask_output=multimask or ambiguous,
                                              return_logits=True, hq_token_only=hq_token_only)
        t_prompt = time.perf_counter() - t0
        t0 = time.perf_counter()
        with status(f"refining with {chosen}", quiet or chosen is None):
            masks = answer_masks(logits, predictor.mask_threshold, chosen, rgb, coords, labels, box_arr, predictor)
        t_refine = time.perf_counter() - t0

    with user_errors():  # a disk that fills up meanwhile
        written = _write_masks(masks, scores, output, multimask)
        if overlay_path is not None:
            best = masks[int(np.argmax(scores))]
            write_image(overlay(rgb, [best], points=coords, labels=labels, boxes=box_arr), overlay_path)
    summary = {
        "image": str(image),
        "size": {"width": rgb.shape[1], "height": rgb.shape[0]},
        "model": predictor.model_type,
        "backend": backend,
        "masks": written,
        "best": int(np.argmax(scores)) if multimask else 0,
        "overlay": str(overlay_path) if overlay_path else None,
        "refine": chosen,
        "flip": flip,
        "seconds": {"embed": round(t_embed, 3), "prompt": round(t_prompt, 4)},
    }
    if chosen is not None:
        summary["seconds"]["refine"] = round(t_refine, 3)
    _report(summary, as_json, quiet)


def _report(summary: dict, as_json: bool, quiet: bool) -> None:
    """The summary as JSON on stdout, or a line per mask written on stderr (none when quiet)."""
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        refined = f", refined with {summary['refine']}" if summary["refine"] else ""
        for rec in summary["masks"]:
            typer.echo(f"wrote {rec['path']} (score {rec['score']:.3f}, {rec['area']} px{refined})", err=True)


def _load_embedding(predictor, path: Path, size: tuple[int, int], image: Path) -> None:
    """The image's embedding from a file instead of the encoder; it must be this image's size."""
    if not hasattr(predictor, "load_embedding"):
        raise UserError("--embedding needs --backend torch (without --flip)")
    predictor.load_embedding(path)
    if tuple(predictor.original_size) != tuple(size):
        h, w = predictor.original_size
        raise UserError(f"{path} is the embedding of a {w}x{h} image, but {image} is {size[1]}x{size[0]}")


def _parse_prompts(point: list[str], box: str | None):
    """The options' clicks as coords (N, 2) and labels (N,), and the box (4,); None where absent."""
    points = [parse_floats(p, (2, 3), "--point") for p in point]
    box_values = parse_floats(box, (4,), "--box") if box else None
    if not points and box_values is None:
        raise UserError("give at least one --point X,Y or a --box X0,Y0,X1,Y1")
    coords = np.array([p[:2] for p in points]) if points else None
    for p in points:
        if len(p) == 3 and p[2] not in (0, 1):
            raise UserError(f"--point label {p[2]:g}: use 1 (foreground) or 0 (background)")
    labels = np.array([int(p[2]) if len(p) == 3 else 1 for p in points]) if points else None
    return coords, labels, (np.array(box_values) if box_values else None)


def _write_masks(masks: np.ndarray, scores: np.ndarray, output: Path, multimask: bool) -> list[dict]:
    """The best mask as `output`, or every candidate as OUTPUT_0.png ...; what was written."""
    from ..io import write_mask_png

    if multimask:
        paths = [(output.with_name(f"{output.stem}_{i}{output.suffix or '.png'}"), i) for i in range(len(masks))]
    else:
        paths = [(output, int(np.argmax(scores)))]
    written = []
    for path, i in paths:
        write_mask_png(masks[i], path)
        written.append({"path": str(path), "score": float(scores[i]), "area": int(masks[i].sum())})
    return written
