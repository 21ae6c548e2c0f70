"""`run_job`: a `JobSpec` over many images, on this process (`engine="local"`) or on a Ray
cluster (`engine="ray"`, `promptseg.engine.ray_engine`), with the same outputs either way."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..io import InputPath
from ..progress import progress
from .batch import BatchSummary, output_names, run_batch
from .jobs import JobSpec

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray job runs: `address` None starts a Ray for the job on this machine
    (with `num_cpus`, all of them when None) and stops it after; "auto" or "ray://host:port" joins
    a cluster. `workers` (min, max) actors, each with `cpus_per_worker` CPUs and
    `gpus_per_worker` GPUs (fractions allowed), given `batch_size` images at a time."""

    address: str | None = None
    workers: tuple[int, int] = (1, 1)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 4
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        low, high = self.workers
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            raise ValueError(f"workers must be N or MIN,MAX with 1 <= MIN <= MAX, got {self.workers}")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus per worker must be > 0, got {self.cpus_per_worker}")
        if not self.gpus_per_worker >= 0:
            raise ValueError(f"gpus per worker must be >= 0, got {self.gpus_per_worker}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch size must be an integer >= 1, got {self.batch_size}")


def parse_workers(text: str) -> tuple[int, int]:
    """"N" or "MIN,MAX" -> (min, max); ValueError naming the value otherwise."""
    try:
        parts = [int(v) for v in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
        raise ValueError(f"--workers must be N or MIN,MAX (1 <= MIN <= MAX), got {text!r}")
    return parts[0], parts[1]


def run_job(spec: JobSpec, paths: list[InputPath], engine: str = "local", ray: RayOptions | None = None,
            quiet: bool = False, label: str | None = None, predictor=None, shards: int | None = None,
            process=None) -> BatchSummary:
    """Run `spec` over `paths`: each image's outputs written atomically, images already done
    skipped, failures recorded while the rest go on (`promptseg.engine.batch`), with a progress
    display (images, masks, images per minute, failures) unless `quiet`. `predictor`: the local
    engine's, when the caller built it already; `process`: its per-image step, likewise. `shards`: afterwards, pack the image + JSON
    pairs into tar files of that many pairs and write `index.parquet` (`promptseg.engine.shards`)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if shards is not None:
        from .shards import check_shardable

        check_shardable(spec)  # before any work
    names = output_names(paths)
    started = time.perf_counter()
    with progress(len(paths), label or spec.kind, quiet, info="") as advance:
        def after_each(summary: BatchSummary) -> None:
            advance(completed=len(summary.results), info=summary.progress_text(time.perf_counter() - started))

        if engine == "local":
            summary = run_batch(paths, spec.folder, spec.target, process or spec.processor(predictor), after_each,
                                names)
        else:
            from .ray_engine import run_on_ray

            summary = run_on_ray(spec, paths, names, ray or RayOptions(), after_each)
    spec.finish(names)
    if shards is not None:
        from .shards import write_index, write_shards

        write_index(spec, summary.results, write_shards(spec, paths, names, shards))
    return summary
