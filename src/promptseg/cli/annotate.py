"""`promptseg engine`: the data engine's automatic stage over unlabelled photos."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (
    INPUTS_HELP,
    MODEL_HELP,
    engine_options,
    finish_job,
    gather_inputs,
    start_job,
    threads_option,
    user_errors,
)

_E = engine_options()


def engine(
    inputs: list[str] | None = typer.Argument(None, help=INPUTS_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="SA-1B shard folder to write (image + JSON pairs)."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file (e.g. a training run's)."),
    points_per_side: int = typer.Option(32, help="Grid of points_per_side^2 clicks."),
    pred_iou_thresh: float | None = typer.Option(
        None, help="Keep masks the model is this confident in [default: the model's; 0.88 for SAM]."
    ),
    stability_score_thresh: float | None = typer.Option(
        None, help="Keep masks at least this stable [default: the model's; 0.95 for SAM]."
    ),
    min_mask_region_area: int = typer.Option(100, help="Remove holes and islands smaller than this (pixels)."),
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
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Data engine, automatic stage: turn unlabelled photos into an SA-1B shard for training."""
    from ..engine.jobs import JobSpec
    from ..engine.run import run_job
    from ..everything import MaskGenerator
    from ..predict import load_predictor

    paths, missing = gather_inputs(inputs, manifest)
    with user_errors():
        ray = start_job(threads, output, engine, ray_address, workers, cpus_per_worker, gpus_per_worker, batch_size)
        options = dict(points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                       stability_score_thresh=stability_score_thresh, min_mask_region_area=min_mask_region_area)
        MaskGenerator.check_options(**options)
        spec = JobSpec("engine", str(output), generator=options, model=model,
                       checkpoint=None if checkpoint is None else str(checkpoint))
        predictor = load_predictor(model, checkpoint=checkpoint) if ray is None else None
        summary = run_job(spec, paths, engine, ray, quiet, "annotating", predictor, shards)
    finish_job(summary, missing, quiet, lambda failed: (
        f"{summary.done} images annotated, {summary.masks} masks kept, {failed} failed; shard in {output}"))
