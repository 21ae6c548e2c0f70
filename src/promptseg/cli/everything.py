"""`promptseg everything`: every object in each image, into SA-1B JSON, COCO or PNG masks."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (
    BACKEND_HELP,
    FLIP_HELP,
    HQ_TOKEN_ONLY_HELP,
    INPUTS_HELP,
    MODEL_HELP,
    check_backend,
    engine_options,
    fail,
    finish_job,
    gather_inputs,
    start_job,
    threads_option,
    user_errors,
)

_E = engine_options()


def everything(
    inputs: list[str] | None = typer.Argument(None, help=INPUTS_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the results."),
    fmt: str = typer.Option("sa1b", "--format", "-f", help="sa1b (JSON per image), coco (one file) or png."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file."),
    overlays: bool = typer.Option(True, "--overlay/--no-overlay", help="Write a picture of every mask per image."),
    points_per_side: int = typer.Option(32, help="Grid of points_per_side^2 clicks."),
    points_per_batch: int = typer.Option(64, help="Clicks decoded together."),
    pred_iou_thresh: float | None = typer.Option(
        None, help="Keep masks with a higher predicted IoU [default: the model's; 0.88 for SAM]."
    ),
    stability_score_thresh: float | None = typer.Option(
        None, help="Keep masks at least this stable [default: the model's; 0.95 for SAM]."
    ),
    stability_score_offset: float = typer.Option(1.0, help="Logit offset of the stability score."),
    box_nms_thresh: float = typer.Option(0.7, help="Box IoU above which duplicates are removed."),
    crop_n_layers: int = typer.Option(0, help="Extra layers of overlapping crops."),
    crop_nms_thresh: float = typer.Option(0.7, help="Box NMS threshold across crops."),
    crop_overlap_ratio: float = typer.Option(512 / 1500, help="Overlap of neighbouring crops."),
    crop_n_points_downscale_factor: int = typer.Option(1, help="Grid thinning per crop layer."),
    min_mask_region_area: int = typer.Option(0, help="Remove holes and islands smaller than this (pixels)."),
    multimask_output: bool = typer.Option(True, "--multimask/--single-mask",
                                          help="Three candidate masks per click, or one (SAM 2's option)."),
    use_m2m: bool = typer.Option(False, "--m2m", help="Refine each candidate once with its own mask as input "
                                 "(SAM 2's use_m2m)."),
    hq_token_only: bool = typer.Option(False, "--hq-token-only", help=HQ_TOKEN_ONLY_HELP),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder written by `promptseg export`."),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP),
    shards: int | None = typer.Option(None, "--shards", help="Also pack the results as SA-1B tar files of N image + "
                                      "JSON pairs (sa_000000.tar, ...) with an index.parquet of every input."),
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
    """Find every object in each image; write SA-1B JSON, COCO JSON or PNG masks, and overlays.

    Re-running skips images already done; unreadable images are reported, skipped, and make
    the exit status non-zero. `--engine ray` runs the same job on a Ray cluster."""
    from ..engine.jobs import JobSpec
    from ..engine.local import FORMATS
    from ..engine.run import run_job
    from ..everything import MaskGenerator
    from ..predict import load_predictor

    if fmt not in FORMATS:
        fail(f"--format must be sa1b, coco or png, got {fmt!r}")
    paths, missing = gather_inputs(inputs, manifest)
    with user_errors():
        ray = start_job(threads, output, engine, ray_address, workers, cpus_per_worker, gpus_per_worker, batch_size)
        check_backend(backend)
        options = dict(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            min_mask_region_area=min_mask_region_area,
            multimask_output=multimask_output,
            use_m2m=use_m2m,
            hq_token_only=hq_token_only,
        )
        spec = JobSpec("everything", str(output), fmt=fmt, overlays=overlays, generator=options, model=model,
                       checkpoint=None if checkpoint is None else str(checkpoint), backend=backend, flip=flip,
                       onnx_dir=None if onnx_dir is None else str(onnx_dir))
        MaskGenerator.check_options(**options)
        predictor = None
        if ray is None:  # built here, so a bad model fails before any image (Ray's workers build their own)
            predictor = load_predictor(model, checkpoint=checkpoint, backend=backend, flip=flip, onnx_dir=onnx_dir)
        summary = run_job(spec, paths, engine, ray, quiet, "everything", predictor, shards)
    finish_job(summary, missing, quiet, lambda failed: (
        f"{len(paths)} images: {summary.done} segmented ({summary.masks} masks), {summary.skipped} already done, "
        f"{failed} failed; results in {output}"))
