"""`promptseg engine`: the data engine's automatic stage over unlabelled photos."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cpu import set_threads
from .common import MODEL_HELP, check_output_dir, fail, threads_option, user_errors
from .everything import report_failures


def engine(
    inputs: list[str] = typer.Argument(..., help="Unlabelled image files, folders or glob patterns."),
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
    threads: int | None = threads_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Data engine, automatic stage: turn unlabelled photos into an SA-1B shard for training."""
    from ..checkpoints import load_model
    from ..engine import auto_annotate
    from ..everything import MaskGenerator
    from ..io import expand_inputs
    from ..progress import progress

    paths, missing = expand_inputs(inputs)
    if not paths:
        fail(f"no image files found in {' '.join(inputs)}")
    with user_errors():
        set_threads(threads)
        check_output_dir(output)
        generator = MaskGenerator(
            load_model(model, checkpoint),
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            min_mask_region_area=min_mask_region_area,
            output_mode="coco_rle",
        )
    with progress(len(paths), "annotating", quiet) as advance:
        done, kept, failures = auto_annotate(generator, paths, output, advance)
    failures = [(m, "no such file, or the pattern matched nothing") for m in missing] + failures
    if not quiet:
        typer.echo(f"{done} images annotated, {kept} masks kept, {len(failures)} failed; shard in {output}", err=True)
    report_failures(failures)
