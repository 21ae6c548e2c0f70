"""`promptseg eval`: a model scored with the field's protocols beside classical baselines."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cpu import set_threads
from .common import (
    BACKEND_HELP,
    FLIP_HELP,
    MODEL_HELP,
    REFINE_HELP,
    UserError,
    check_backend,
    check_refine,
    threads_option,
    user_errors,
)


def evaluate(
    data: list[Path] = typer.Argument(..., help="Datasets: images/+masks/ folders (or a folder of them), "
                                      "SA-1B folders, COCO instances .json files; for --task edges, images/ with "
                                      "boundaries_per_annotator/<stem>_<k>.png or BSDS500's groundTruth/*.mat."),
    task: str = typer.Option("interactive", "--task", help="interactive (clicks, box, NoC); or one of the SAM paper's "
                             "zero-shot tasks: edges (BSDS500's ODS, OIS, AP, R50), proposals (mask AR@10/100/1000), "
                             "instances (COCO mask AP from box prompts)."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file to evaluate."),
    protocols: str = typer.Option("box,click,noc", "--protocols", help="Any of box, click, noc."),
    baselines: str | None = typer.Option(None, "--baselines",
                                         help="Classical baselines on the same data. Interactive: grabcut, "
                                         "random-walker (the default pair), grabcut-clicks (GrabCut seeded by the "
                                         "clicks alone, as --refine grabcut without the model). Edges: canny, sobel "
                                         "(both by default). Or none."),
    thresholds: int = typer.Option(99, "--thresholds", min=1, max=999, help="Edges: thresholds the maps are cut at."),
    points_per_side: int = typer.Option(64, "--points-per-side", min=1, max=128,
                                        help="Proposals: the grid of clicks (the paper's 64 x 64)."),
    boxes: Path | None = typer.Option(None, "--boxes", help="Instances: a detector's boxes in COCO results format "
                                      "(image_id, category_id, bbox, score); without it, the annotated boxes "
                                      "(an oracle row)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many instances per dataset."),
    every: int = typer.Option(1, "--every", min=1, help="Score every Nth instance (a uniform subset)."),
    per_image: int = typer.Option(5, "--per-image", min=1, help="SA-1B/COCO: masks scored per image."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the full report as JSON."),
    pictures: Path | None = typer.Option(None, "--pictures", help="Draw examples (prompts, masks) into this PNG; "
                                         "for edges, the precision-recall curves."),
    examples: int = typer.Option(2, "--examples", min=0, help="Examples per dataset in the picture."),
    refine: str | None = typer.Option(None, "--refine", help=REFINE_HELP + " Scored as its own row, beside the model alone."),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP + " The model's rows are then named '... flip'."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder written by `promptseg export`."),
    threads: int | None = threads_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Score a model with the field's protocols (1-click, box, NoC@85/90), or on the SAM paper's zero-shot
    tasks (edges, proposals, instances), beside classical baselines."""
    with user_errors():
        if task not in ("interactive", "edges", "proposals", "instances"):
            raise UserError(f"--task {task!r}: use interactive, edges, proposals or instances")
        if task != "interactive":
            used = [name for name, on in (("--refine", refine is not None), ("--flip", flip),
                                          ("--protocols", protocols != "box,click,noc")) if on]
            if used:
                raise UserError(f"{', '.join(used)}: for the interactive task only, not --task {task}")
    if task == "edges":
        return _evaluate_edges(data, model, checkpoint, baselines, thresholds, limit, every, output, pictures,
                               backend, onnx_dir, threads, quiet)
    if task in ("proposals", "instances"):
        return _evaluate_objects(task, data, model, checkpoint, points_per_side, boxes, limit, every, output, backend,
                                 onnx_dir, threads, quiet)
    from ..eval.datasets import load_dataset
    from ..eval.methods import GrabCutClicksMethod, GrabCutMethod, RandomWalkerMethod, SamMethod
    from ..eval.run import draw_examples, evaluate, table
    from ..predict import load_predictor
    from ..progress import progress, status

    with user_errors():
        set_threads(threads)
        chosen = {p.strip() for p in protocols.split(",") if p.strip()}
        if not chosen or chosen - {"box", "click", "noc"}:
            raise UserError(f"--protocols {protocols!r}: use any of box, click, noc")
        names = {b.strip() for b in (baselines or "grabcut,random-walker").split(",") if b.strip()} - {"none"}
        if names - {"grabcut", "random-walker", "grabcut-clicks"}:
            raise UserError(f"--baselines {baselines!r}: use grabcut, random-walker, grabcut-clicks or none")
        refine = check_refine(refine)
        check_backend(backend)
        datasets = [
            (name, insts[::every]) for path in data for name, insts in load_dataset(path, per_image=per_image)
        ]
        if limit:
            datasets = [(name, insts[:limit]) for name, insts in datasets]
        with status("loading model", quiet):
            predictor = load_predictor(model, checkpoint=checkpoint, backend=backend, flip=flip, onnx_dir=onnx_dir)
    model_type = predictor.model_type
    name = f"promptseg {model_type}" + ("" if backend == "torch" else f" {backend}") + (" flip" if flip else "")
    methods = [SamMethod(predictor, name=name)]
    if refine is not None:
        plain = methods[0]
        methods.append(SamMethod(plain.predictor, name=f"{plain.name} + {refine}", refine=refine, embedded_by=plain))
    if "grabcut" in names:
        methods.append(GrabCutMethod())
    if "random-walker" in names:
        methods.append(RandomWalkerMethod())
    if "grabcut-clicks" in names:
        methods.append(GrabCutClicksMethod())
    errors: list[str] = []
    total = sum(len(i) for _, i in datasets)
    with progress(total, "evaluating", quiet) as advance:
        report, shown = evaluate(datasets, methods, chosen, advance, keep=examples if pictures else 0, errors=errors)
    report["model"] = _model_record(model, checkpoint, onnx_dir, backend, model_type)
    report["protocols"] = sorted(chosen)
    report["refine"] = refine
    report["flip"] = flip
    _finish(report, table(report), output, errors,
            (lambda: draw_examples(shown, methods, pictures)) if pictures is not None and shown else None)


def _model_record(model, checkpoint, onnx_dir, backend, model_type) -> dict:
    source = str(onnx_dir or checkpoint or "") or ("bundled" if model in (None, "tiny") else "cached official weights")
    return {"type": model_type, "checkpoint": source, "backend": backend}


def _finish(report: dict, text: str, output, errors: list[str], draw=None) -> None:
    """Prints the table, writes the report and any picture, lists what was skipped (exit 1 then)."""
    report["errors"] = errors
    typer.echo(text)
    if output is not None:
        from ..io import write_json

        write_json(report, output)
    if draw is not None:
        draw()
    for e in errors:
        typer.echo(f"skipped {e}", err=True)
    if errors:
        raise typer.Exit(1)


def _evaluate_edges(data, model, checkpoint, baselines, levels, limit, every, output, pictures, backend, onnx_dir,
                    threads, quiet) -> None:
    from ..eval.edge_task import draw_precision_recall, edge_methods, edge_table, evaluate_edges, load_boundary_dataset
    from ..predict import load_predictor
    from ..progress import progress, status

    with user_errors():
        set_threads(threads)
        names = [b.strip() for b in (baselines or "canny,sobel").split(",") if b.strip() and b.strip() != "none"]
        if set(names) - {"canny", "sobel"}:
            raise UserError(f"--baselines {baselines!r}: for edges use canny, sobel or none")
        check_backend(backend)
        if len(data) != 1:
            raise UserError("--task edges scores one dataset at a time")
        images = load_boundary_dataset(data[0])[::every]
        if limit:
            images = images[:limit]
        with status("loading model", quiet):
            predictor = load_predictor(model, checkpoint=checkpoint, backend=backend, onnx_dir=onnx_dir)
        name = f"promptseg {predictor.model_type}" + ("" if backend == "torch" else f" {backend}")
        methods = edge_methods(predictor, tuple(names), name=name)
    errors: list[str] = []
    with progress(len(images), "edges", quiet) as advance:
        report = evaluate_edges(images, methods, levels, advance, errors)
    report["dataset"] = str(data[0])
    report["model"] = _model_record(model, checkpoint, onnx_dir, backend, predictor.model_type)
    _finish(report, edge_table(report), output, errors,
            (lambda: draw_precision_recall(report, pictures)) if pictures is not None and report["images"] else None)


def _evaluate_objects(task, data, model, checkpoint, points_per_side, boxes, limit, every, output, backend, onnx_dir,
                      threads, quiet) -> None:
    from ..eval.objects import evaluate_objects, load_object_dataset, object_table, read_detections
    from ..predict import load_predictor
    from ..progress import progress, status

    with user_errors():
        set_threads(threads)
        check_backend(backend)
        if len(data) != 1:
            raise UserError(f"--task {task} scores one dataset at a time")
        if boxes is not None and task != "instances":
            raise UserError("--boxes is for --task instances")
        _, images, categories = load_object_dataset(data[0])
        images = images[::every]
        if limit:
            images = images[:limit]
        detections = read_detections(boxes, images, categories) if boxes is not None else None
        with status("loading model", quiet):
            predictor = load_predictor(model, checkpoint=checkpoint, backend=backend, onnx_dir=onnx_dir)
    label = f"promptseg {predictor.model_type}" + ("" if backend == "torch" else f" {backend}")
    errors: list[str] = []
    with progress(len(images), task, quiet) as advance:
        report = evaluate_objects(images, categories, predictor, task, detections, points_per_side, advance, errors)
    report["dataset"] = str(data[0])
    report["model"] = _model_record(model, checkpoint, onnx_dir, backend, predictor.model_type)
    _finish(report, object_table(report, label), output, errors)
