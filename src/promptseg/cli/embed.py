"""`promptseg embed`: one embedding file per image, which `Predictor.load_embedding` (and
`segment --embedding`) read, so an image is embedded once and answered anywhere."""

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


def embed(
    inputs: list[str] | None = typer.Argument(None, help=INPUTS_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the embedding files (NAME.safetensors)."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file."),
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
    """Embed each image once: NAME.safetensors per image (the embedding, SAM 2's levels too, and
    the image's sizes), for `Predictor.load_embedding`. Re-running skips images already done."""
    from ..engine.jobs import JobSpec
    from ..engine.run import run_job
    from ..predict import load_predictor

    paths, missing = gather_inputs(inputs, manifest)
    with user_errors():
        ray = start_job(threads, output, engine, ray_address, workers, cpus_per_worker, gpus_per_worker, batch_size)
        spec = JobSpec("embed", str(output), model=model, checkpoint=None if checkpoint is None else str(checkpoint))
        predictor = load_predictor(model, checkpoint=checkpoint) if ray is None else None
        summary = run_job(spec, paths, engine, ray, quiet, "embedding", predictor)
    finish_job(summary, missing, quiet, lambda failed: (
        f"{len(paths)} images: {summary.done} embedded, {summary.skipped} already done, {failed} failed; "
        f"files in {output}"))
