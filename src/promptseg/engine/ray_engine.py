"""A `JobSpec` on Ray Data: the inputs become a dataset, a pool of stateful actors (Ray Data's
class-based `map_batches`) each build the predictor once and run the local engine's per-image
step, and the driver reads one result row per input as they finish.

The guarantees are the local engine's, because the step is the same: each output is written
atomically by the worker that made it, an image already done is skipped, a bad file is recorded
and the rest go on. Ray restarts an actor whose process dies and runs its batch again; the images
of that batch it had already written are then found done, so each image is in the output once.
Needs the `ray` extra: pip install 'promptseg[ray]'.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

from ..io import InputPath, input_path
from .batch import BatchSummary, ItemResult, add_result, process_one, remove_partial_files
from .jobs import JobSpec

RESULT_FIELDS = tuple(f.name for f in fields(ItemResult))


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ValueError("--engine ray needs Ray Data: pip install 'promptseg[ray]'") from None
    return ray


class ImageWorker:
    """One Ray actor: the job's predictor and per-image step, built once; torch given the CPUs
    Ray assigned to this actor (so actors side by side do not oversubscribe the cores) and its
    GPU when it has one."""

    def __init__(self, spec: JobSpec) -> None:
        import ray
        import torch

        from ..cpu import set_threads

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        set_threads(max(1, int(cpus)))
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.spec = spec
        try:
            self.process = spec.processor(spec.predictor(device), device)
        except Exception as exc:  # noqa: BLE001 - reported with each image: Ray would restart this actor forever
            reason = f"the worker could not load the model: {exc}"

            def refuse(item):
                raise ValueError(reason)

            self.process = refuse

    def __call__(self, batch: dict) -> dict:
        rows = []
        for path, given, image_id, name in zip(batch["path"], batch["given"], batch["image_id"], batch["name"]):
            result = process_one(input_path(path), int(image_id), str(name), self.spec.target, self.process)
            result.path = str(given)  # the input as the user gave it, in the job's report
            rows.append(result)
        return {k: [getattr(r, k) for r in rows] for k in RESULT_FIELDS}


def run_on_ray(spec: JobSpec, paths: list[InputPath], names: list[str], options,
               after_each: Callable[[BatchSummary], None] = lambda s: None) -> BatchSummary:
    """Run `spec` over `paths` (output `names`) on Ray with `options` (`run.RayOptions`)."""
    import logging

    # Ray's own notes (its core worker's, Ray Data's plans and progress bars) stay off the
    # driver's terminal: the job shows its own progress, and failures come back as results
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray = _import_ray()
    spec.check()
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # workers open files by absolute path: their working folder need not be the driver's
    spec = replace(spec, output=str(spec.folder.resolve()),
                   checkpoint=_absolute(spec.checkpoint), onnx_dir=_absolute(spec.onnx_dir))
    if spec.text.get("detector") and Path(spec.text["detector"]).exists():  # a folder, not a hub id
        spec = replace(spec, text={**spec.text, "detector": _absolute(spec.text["detector"])})
    spec.folder.mkdir(parents=True, exist_ok=True)
    remove_partial_files(spec.folder)
    started_here = not ray.is_initialized()
    if started_here:
        init = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if options.address is None:
            ray.init(num_cpus=options.num_cpus, **init)
        else:
            ray.init(address=options.address, **init)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = [{"path": str(p.resolve()), "given": str(p), "image_id": i, "name": n}
                for i, (p, n) in enumerate(zip(paths, names), start=1)]
        low, high = options.workers
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // options.batch_size)))
        # Ray Data starts an actor whose process died again and runs its batch again (its
        # defaults: max_restarts and max_task_retries -1)
        pool = ray.data.ActorPoolStrategy(size=low) if low == high else ray.data.ActorPoolStrategy(
            min_size=low, max_size=high)
        results = dataset.map_batches(
            ImageWorker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=options.batch_size,
            compute=pool,
            num_cpus=options.cpus_per_worker,
            **({"num_gpus": options.gpus_per_worker} if options.gpus_per_worker else {}),
        )
        summary = BatchSummary(total=len(rows))
        for row in results.iter_rows():
            add_result(summary, ItemResult(**{k: _plain(row[k]) for k in RESULT_FIELDS}))
            after_each(summary)
        return summary
    finally:
        if started_here:
            ray.shutdown()


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _plain(value):
    """A numpy scalar from a Ray block as the Python value."""
    return value.item() if hasattr(value, "item") else value

