"""The `promptseg` command."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Segment Anything on your machine: prompts to masks, official checkpoints, tools.",
)


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _status(message: str, quiet: bool) -> Iterator[None]:
    """A spinner on a terminal while long work runs; silent when piped or quiet."""
    if quiet or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def _parse_floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"{what} {text!r} is not a list of numbers") from None
    if len(values) not in n:
        shapes = {2: "X,Y", 3: "X,Y,LABEL", 4: "X0,Y0,X1,Y1"}
        raise UserError(f"{what} {text!r} must be {' or '.join(shapes[k] for k in n)}")
    return values


def _model_weights(model: str | None, checkpoint: Path | None) -> Path:
    """The weights file the options name: the checkpoint, the bundled default model's, or an
    official model's place in the cache (which may not be downloaded yet)."""
    from .checkpoints import DEFAULT_MODEL, OFFICIAL_WEIGHTS, cache_dir, default_checkpoint

    if checkpoint is not None:
        return checkpoint
    if model is None or model == DEFAULT_MODEL:
        return default_checkpoint()
    known = OFFICIAL_WEIGHTS.get(model)
    if known is None:
        from .model import CONFIGS

        if model in CONFIGS:
            raise UserError(f"{model} has no bundled or official weights; pass the trained ones with --checkpoint PATH")
        raise UserError(f"unknown model {model!r}; choose {DEFAULT_MODEL} (default) or one of {', '.join(OFFICIAL_WEIGHTS)}")
    return cache_dir() / known.filename


def resolve_model(model: str | None, checkpoint: Path | None):
    """Build the model the options name: a checkpoint file; the bundled default model (`tiny`)
    when nothing or `tiny` is named; else cached official weights of a named type."""
    from .checkpoints import DEFAULT_MODEL, build_model, cache_dir, default_model

    weights = _model_weights(model, checkpoint)
    if checkpoint is None and (model is None or model == DEFAULT_MODEL):
        return default_model()
    if checkpoint is None and not weights.is_file():
        raise UserError(
            f"no weights for {model} in {cache_dir()}; run `promptseg download {model}` or pass --checkpoint PATH"
        )
    return build_model(model, checkpoint=weights)


REFINE_HELP = (
    "Refine the model's answer: zoom (the model looks again at a crop around the answer, one more "
    "embedding; best for small objects), grabcut (OpenCV GrabCut seeded by the answer and the prompts), "
    "or zoom+grabcut."
)


def _check_refine(refine: str | None) -> None:
    from .refine import REFINERS

    if refine is not None and refine not in REFINERS:
        raise UserError(f"--refine {refine!r}: use one of {', '.join(REFINERS)}")


BACKENDS = ("torch", "onnx", "onnx-int8")
BACKEND_HELP = "torch, or onnx / onnx-int8 (ONNX Runtime; files from --onnx-dir, else exported once into the cache)."


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


FLIP_HELP = ("Ask each prompt on the image and on its mirror image and average the answers "
             "(test-time augmentation: a second embedding and decoder pass; see MODEL_CARD.md).")


def resolve_predictor(backend: str, model: str | None, checkpoint: Path | None, onnx_dir: Path | None,
                      flip: bool = False):
    """A Predictor (torch) or an OnnxPredictor for the options, wrapped in a FlipPredictor with
    `flip`. Without --onnx-dir, the model is exported once into the cache, under a key of its
    weights file (path, size, time)."""
    predictor = _resolve_predictor(backend, model, checkpoint, onnx_dir)
    if flip:
        from .tta import FlipPredictor

        predictor = FlipPredictor(predictor)
    return predictor


def _resolve_predictor(backend: str, model: str | None, checkpoint: Path | None, onnx_dir: Path | None):
    _check_backend(backend)
    if backend == "torch":
        from .predictor import Predictor

        return Predictor(resolve_model(model, checkpoint))
    from .export.runtime import OnnxPredictor

    precision = "int8" if backend == "onnx-int8" else "fp32"
    if onnx_dir is None:
        import hashlib

        from . import __version__
        from .checkpoints import cache_dir

        weights = _model_weights(model, checkpoint)
        stat = weights.stat() if weights.is_file() else None
        key = f"{model}|{weights.resolve()}|{stat and (stat.st_size, stat.st_mtime_ns)}|{__version__}"
        onnx_dir = cache_dir() / "onnx" / f"{model or 'default'}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        suffix = ".int8.onnx" if precision == "int8" else ".onnx"
        if not all((onnx_dir / f"{n}{suffix}").is_file() for n in ("encoder", "decoder")):
            from .export.exporter import export_model

            export_model(resolve_model(model, checkpoint), onnx_dir, quantize="int8" if precision == "int8" else None)
    return OnnxPredictor(onnx_dir, precision=precision)


@app.command()
def segment(
    image: Path = typer.Argument(..., help="Image file to segment."),
    point: list[str] = typer.Option(
        [], "--point", "-p", help="X,Y[,LABEL] in pixels; LABEL 1 foreground (default), 0 background. Repeatable."
    ),
    box: str | None = typer.Option(None, "--box", "-b", help="X0,Y0,X1,Y1 in pixels."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model: tiny (bundled, the default), vit_b, vit_l, vit_h."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file (.pth or .safetensors)."),
    output: Path = typer.Option(Path("mask.png"), "--output", "-o", help="Mask PNG to write."),
    overlay_path: Path | None = typer.Option(
        None, "--overlay", help="Also write a picture of the mask over the image."
    ),
    multimask: bool = typer.Option(False, "--multimask", help="Write all three candidate masks (OUTPUT_0.png ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (files, scores, areas) on stdout."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder written by `promptseg export`."),
    refine: str | None = typer.Option(None, "--refine", help=REFINE_HELP),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Segment IMAGE from point and/or box prompts and write the mask as a PNG."""
    import numpy as np

    from .io import overlay, read_image, write_image, write_mask_png
    from .prompts import check_prompts

    try:
        points = [_parse_floats(p, (2, 3), "--point") for p in point]
        box_values = _parse_floats(box, (4,), "--box") if box else None
        if not points and box_values is None:
            raise UserError("give at least one --point X,Y or a --box X0,Y0,X1,Y1")
        rgb = read_image(image)
        coords = np.array([p[:2] for p in points]) if points else None
        labels = np.array([int(p[2]) if len(p) == 3 else 1 for p in points]) if points else None
        box_arr = np.array(box_values) if box_values else None
        check_prompts(rgb.shape[:2], coords, labels, box_arr)  # fail before the slow part
        _check_refine(refine)
        with _status("loading model", quiet):
            predictor = resolve_predictor(backend, model, checkpoint, onnx_dir, flip)
        t0 = time.perf_counter()
        with _status(f"embedding {image.name}", quiet):
            predictor.set_image(rgb)
        t_embed = time.perf_counter() - t0
        # One click is ambiguous: ask for three candidates and keep the best, as SAM's demo does.
        ambiguous = len(points) == 1 and box_arr is None
        t0 = time.perf_counter()
        logits, scores, _ = predictor.predict(coords, labels, box_arr, multimask_output=multimask or ambiguous,
                                              return_logits=True)
        t_prompt = time.perf_counter() - t0
        from .refine import answer_masks

        t0 = time.perf_counter()
        with _status(f"refining with {refine}", quiet or refine is None):
            masks = answer_masks(logits, predictor.mask_threshold, refine, rgb, coords, labels, box_arr, predictor)
        t_refine = time.perf_counter() - t0
    except (UserError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return

    best = int(np.argmax(scores))
    written = []
    if multimask:
        for i, m in enumerate(masks):
            path = output.with_name(f"{output.stem}_{i}{output.suffix or '.png'}")
            write_mask_png(m, path)
            written.append({"path": str(path), "score": float(scores[i]), "area": int(m.sum())})
    else:
        write_mask_png(masks[best], output)
        written.append({"path": str(output), "score": float(scores[best]), "area": int(masks[best].sum())})
    if overlay_path is not None:
        write_image(overlay(rgb, [masks[best]], points=coords, labels=labels, boxes=box_arr), overlay_path)
    summary = {
        "image": str(image),
        "size": {"width": rgb.shape[1], "height": rgb.shape[0]},
        "model": predictor.model_type,
        "backend": backend,
        "masks": written,
        "best": 0 if not multimask else best,
        "overlay": str(overlay_path) if overlay_path else None,
        "refine": refine,
        "flip": flip,
        "seconds": {"embed": round(t_embed, 3), "prompt": round(t_prompt, 4)},
    }
    if refine is not None:
        summary["seconds"]["refine"] = round(t_refine, 3)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        for rec in written:
            typer.echo(f"wrote {rec['path']} (score {rec['score']:.3f}, {rec['area']} px)", err=True)


def _unique_names(paths: list[Path]) -> list[str]:
    """Output names from file stems; stems seen twice get their parent folder prefixed."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


@app.command()
def everything(
    inputs: list[str] = typer.Argument(..., help="Image files, folders and glob patterns."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the results."),
    fmt: str = typer.Option("sa1b", "--format", "-f", help="sa1b (JSON per image), coco (one file) or png."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model: tiny (bundled, the default), vit_b, vit_l, vit_h."),
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
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder written by `promptseg export`."),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Find every object in each image; write SA-1B JSON, COCO JSON or PNG masks, and overlays.

    Re-running skips images already done; unreadable images are reported, skipped, and make
    the exit status non-zero."""
    from .everything import MaskGenerator
    from .formats import annotation, coco_json, sa1b_json, write_png_masks
    from .io import expand_inputs, overlay, read_image, write_image, write_json

    if fmt not in ("sa1b", "coco", "png"):
        _fail(f"--format must be sa1b, coco or png, got {fmt!r}")
    paths, missing = expand_inputs(inputs)
    if not paths:
        _fail(f"no image files found in {' '.join(inputs)}")
    try:
        predictor = resolve_predictor(backend, model, checkpoint, onnx_dir, flip)
        generator = MaskGenerator(
            predictor,
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
            output_mode="coco_rle",
        )
    except (UserError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    output.mkdir(parents=True, exist_ok=True)
    names = _unique_names(paths)
    failures = [(m, "no such file, or the pattern matched nothing") for m in missing]
    done = skipped = masks_found = 0

    def result_path(name: str) -> Path:
        if fmt == "sa1b":
            return output / f"{name}.json"
        if fmt == "png":
            return output / name / "masks.json"
        return output / ".parts" / f"{name}.json"

    bar = None
    if not quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[masks]} masks, {task.fields[rate]} img/min"),
            TimeElapsedColumn(),
        )
        task = bar.add_task("everything", total=len(paths), masks=0, rate="-")
        bar.start()
    started = time.perf_counter()
    try:
        for image_id, (path, name) in enumerate(zip(paths, names), start=1):
            target = result_path(name)
            if target.exists():
                skipped += 1
            else:
                try:
                    rgb = read_image(path)
                    records = generator.generate(rgb)
                except (ValueError, FileNotFoundError, OSError) as exc:
                    failures.append((str(path), str(exc)))
                    records = None
                if records is not None:
                    h, w = rgb.shape[:2]
                    if fmt == "png":
                        write_png_masks(records, output / name)
                    if overlays:
                        picture = overlay(rgb, [r["segmentation"] for r in _decoded(records)])
                        write_image(
                            picture, output / name / "overlay.png" if fmt == "png" else output / f"{name}_overlay.png"
                        )
                    doc = sa1b_json(records, image_id, path.name, w, h)
                    write_json(doc, target)  # written last: its presence marks the image done
                    done += 1
                    masks_found += len(records)
            if bar is not None:
                minutes = (time.perf_counter() - started) / 60
                bar.update(task, advance=1, masks=masks_found, rate=f"{done / minutes:.1f}" if done else "-")
    finally:
        if bar is not None:
            bar.stop()

    if fmt == "coco":
        images, annotations = [], []
        for image_id, name in enumerate(names, start=1):
            part = result_path(name)
            if not part.exists():
                continue
            doc = json.loads(part.read_text())
            info = doc["image"]
            images.append(
                {"id": image_id, "file_name": info["file_name"], "width": info["width"], "height": info["height"]}
            )
            for ann in doc["annotations"]:
                annotations.append(annotation(ann, len(annotations) + 1, image_id))
        write_json(coco_json(images, annotations), output / "annotations.json")

    if not quiet:
        typer.echo(
            f"{len(paths)} images: {done} segmented ({masks_found} masks), {skipped} already done, "
            f"{len(failures)} failed; results in {output}",
            err=True,
        )
    for item, why in failures:
        typer.echo(f"failed: {item}: {why}", err=True)
    if failures:
        raise typer.Exit(1)


def _decoded(records: list[dict]) -> list[dict]:
    from .masks import decode_coco_rle

    return [{**r, "segmentation": decode_coco_rle(r["segmentation"])} for r in records]


@app.command()
def serve(
    model: str | None = typer.Option(None, "--model", "-m", help="Model: tiny (bundled, the default), vit_b, vit_l, vit_h."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    cache_mb: int = typer.Option(1024, "--cache-mb", min=16, help="Memory budget of the embedded-image cache (MiB)."),
    max_upload_mb: int = typer.Option(25, "--max-upload-mb", min=1, help="Largest accepted upload (MiB)."),
    max_megapixels: float = typer.Option(40.0, "--max-megapixels", min=0.01, help="Largest accepted image."),
    web_runtime: str = typer.Option(
        "auto", "--web-runtime",
        help="onnxruntime-web for decoding in the browser: auto (installed by `promptseg install-web-runtime`, "
             "if it was), off, or a folder with its files.",
    ),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP + " Prompts are then decoded on the server only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log errors only."),
) -> None:
    """Serve the web page at / and the HTTP API under /v1 (OpenAPI docs at /docs)."""
    try:
        from .server import webruntime

        runtime = None
        if web_runtime == "auto":
            runtime = webruntime.find()
        elif web_runtime != "off":
            runtime = webruntime.find(web_runtime)
            if runtime is None:
                raise UserError(f"--web-runtime {web_runtime}: the folder lacks {', '.join(webruntime.FILES)}; "
                                f"run `promptseg install-web-runtime --dest {web_runtime}`")
        with _status("loading model", quiet):
            sam = resolve_model(model, checkpoint)
        import uvicorn

        from .server.app import ServerSettings, create_app

        settings = ServerSettings(
            max_upload_bytes=max_upload_mb * 2**20, max_pixels=int(max_megapixels * 1e6), cache_bytes=cache_mb * 2**20,
            web_runtime=runtime, flip=flip,
        )
        app_ = create_app(sam, settings)
    except (UserError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    if not quiet:
        typer.echo(f"promptseg serving {sam.model_type} at http://{host}:{port}/ (API docs: /docs)", err=True)
        if flip:
            typer.echo("answers are averaged with the mirror image's (--flip); decoding in the browser is off", err=True)
        elif runtime is None:
            typer.echo("decoding in the browser is off (run `promptseg install-web-runtime` to turn it on)", err=True)
    uvicorn.run(app_, host=host, port=port, log_level="warning" if quiet else "info")


@app.command("install-web-runtime")
def install_web_runtime(
    dest: Path | None = typer.Option(None, "--dest", help="Folder for the files (default: the cache, where serve looks)."),
    url: str | None = typer.Option(None, "--url", help="A mirror of the npm tarball."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Fetch onnxruntime-web (pinned release, checked by SHA-256) so that the web page can
    decode prompts in the browser."""
    from .server import webruntime

    try:
        folder = webruntime.install(dest, url=url, quiet=quiet)
    except (ConnectionError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    if not quiet:
        typer.echo(f"onnxruntime-web {webruntime.VERSION} in {folder}", err=True)


@app.command("export")
def export_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for encoder.onnx and decoder.onnx."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model: tiny (bundled, the default), vit_b, vit_l, vit_h."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file."),
    quantize: str | None = typer.Option(None, "--quantize", help="int8: also write encoder.int8.onnx and decoder.int8.onnx."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (14-21)."),
    single_mask: bool = typer.Option(
        False, "--return-single-mask", help="Decoder returns only the best mask (as Meta's export option)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Write the model as ONNX: encoder.onnx (resized RGB image -> embedding) and decoder.onnx
    (embedding + points/box/mask -> full-size masks, IoU scores, low-res logits), the decoder
    with the inputs of Meta's SAM export."""
    try:
        if quantize not in (None, "int8"):
            raise UserError(f"--quantize must be int8, got {quantize!r}")
        with _status("loading model", quiet):
            sam = resolve_model(model, checkpoint)
        from .export.exporter import export_model

        with _status("exporting", quiet):
            paths = export_model(sam, output, opset=opset, quantize=quantize, return_single_mask=single_mask)
    except (UserError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    if not quiet:
        for path in paths.values():
            typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", err=True)


@app.command()
def download(
    model: str = typer.Argument(..., help="vit_b, vit_l or vit_h"),
    dest: Path | None = typer.Option(None, "--dest", help="Folder (default: the cache, $PROMPTSEG_HOME)."),
    url: str | None = typer.Option(None, "--url", help="Fetch from this mirror instead of the published URL."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Fetch Meta's official checkpoint, resume a partial download, and verify size and SHA-256."""
    from .checkpoints import download as fetch

    try:
        path = fetch(model, dest_dir=dest, url=url, quiet=quiet)
    except (ValueError, ConnectionError, OSError) as exc:
        _fail(str(exc))
        return
    typer.echo(str(path))


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write SA-1B pairs (sa_<seed>_<index>.jpg/.json) into."),
    count: int = typer.Option(1000, "--count", "-n", min=1, help="Number of scenes."),
    seed: int = typer.Option(0, "--seed", help="Scenes are a function of (seed, index)."),
    start: int = typer.Option(0, "--start", min=0, help="Index of the first scene."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Write procedural training scenes with exact visible masks (objects, parts, backgrounds)."""
    from .train.synth import write_shard

    with _bar(count, "scenes", quiet) as advance:
        for _ in write_shard(out, count, seed=seed, start=start):
            advance()
    typer.echo(f"{count} scenes in {out}")


@app.command()
def train(
    config: Path = typer.Argument(..., help="TOML training config (see configs/tiny.toml)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start again instead of resuming from the output folder."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop after this many steps (resume later)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train or fine-tune a model with SAM's recipe (simulated interactive prompts, focal+dice, IoU head)."""
    from .train.loop import TrainConfig
    from .train.loop import train as run_training

    try:
        cfg = TrainConfig.from_file(config)
        path = run_training(cfg, resume=not fresh, quiet=quiet, max_steps=max_steps)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    typer.echo(str(path))


@contextmanager
def _bar(total: int, label: str, quiet: bool):
    """A progress bar on a terminal; yields a function that advances it by one."""
    if quiet or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


@app.command()
def engine(
    inputs: list[str] = typer.Argument(..., help="Unlabelled image files, folders or glob patterns."),
    output: Path = typer.Option(..., "--output", "-o", help="SA-1B shard folder to write (image + JSON pairs)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model: tiny (default), vit_b, vit_l, vit_h."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file (e.g. a training run's)."),
    points_per_side: int = typer.Option(32, help="Grid of points_per_side^2 clicks."),
    pred_iou_thresh: float | None = typer.Option(
        None, help="Keep masks the model is this confident in [default: the model's; 0.88 for SAM]."
    ),
    stability_score_thresh: float | None = typer.Option(
        None, help="Keep masks at least this stable [default: the model's; 0.95 for SAM]."
    ),
    min_mask_region_area: int = typer.Option(100, help="Remove holes and islands smaller than this (pixels)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Data engine, automatic stage: turn unlabelled photos into an SA-1B shard for training."""
    from .everything import MaskGenerator
    from .io import expand_inputs
    from .train.engine import auto_annotate

    paths, missing = expand_inputs(inputs)
    if not paths:
        _fail(f"no image files found in {' '.join(inputs)}")
    try:
        generator = MaskGenerator(
            resolve_model(model, checkpoint),
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            min_mask_region_area=min_mask_region_area,
            output_mode="coco_rle",
        )
    except (UserError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    with _bar(len(paths), "annotating", quiet) as advance:
        done, kept, failures = auto_annotate(generator, paths, output, advance)
    failures = [(m, "no such file, or the pattern matched nothing") for m in missing] + failures
    if not quiet:
        typer.echo(f"{done} images annotated, {kept} masks kept, {len(failures)} failed; shard in {output}", err=True)
    for item, why in failures:
        typer.echo(f"failed: {item}: {why}", err=True)
    if failures:
        raise typer.Exit(1)


@app.command("eval")
def evaluate_cmd(
    data: list[Path] = typer.Argument(..., help="Datasets: images/+masks/ folders (or a folder of them), "
                                      "SA-1B folders, COCO instances .json files."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model: tiny (default), vit_b, vit_l, vit_h."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file to evaluate."),
    protocols: str = typer.Option("box,click,noc", "--protocols", help="Any of box, click, noc."),
    baselines: str = typer.Option("grabcut,random-walker", "--baselines",
                                  help="Classical baselines on the same instances: grabcut, random-walker, "
                                  "grabcut-clicks (GrabCut seeded by the clicks alone, as --refine grabcut "
                                  "without the model), or none."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many instances per dataset."),
    every: int = typer.Option(1, "--every", min=1, help="Score every Nth instance (a uniform subset)."),
    per_image: int = typer.Option(5, "--per-image", min=1, help="SA-1B/COCO: masks scored per image."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the full report as JSON."),
    pictures: Path | None = typer.Option(None, "--pictures", help="Draw examples (prompts, masks) into this PNG."),
    examples: int = typer.Option(2, "--examples", min=0, help="Examples per dataset in the picture."),
    refine: str | None = typer.Option(None, "--refine", help=REFINE_HELP + " Scored as its own row, beside the model alone."),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP + " The model's rows are then named '... flip'."),
    backend: str = typer.Option("torch", "--backend", help=BACKEND_HELP),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder written by `promptseg export`."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Score a model with the field's protocols (1-click, box, NoC@85/90) beside classical baselines."""
    from .eval.datasets import load_dataset
    from .eval.methods import GrabCutClicksMethod, GrabCutMethod, RandomWalkerMethod, SamMethod
    from .eval.run import draw_examples, evaluate, table

    try:
        chosen = {p.strip() for p in protocols.split(",") if p.strip()}
        if not chosen or chosen - {"box", "click", "noc"}:
            raise UserError(f"--protocols {protocols!r}: use any of box, click, noc")
        names = {b.strip() for b in baselines.split(",") if b.strip()} - {"none"}
        if names - {"grabcut", "random-walker", "grabcut-clicks"}:
            raise UserError(f"--baselines {baselines!r}: use grabcut, random-walker, grabcut-clicks or none")
        _check_refine(refine)
        _check_backend(backend)
        datasets = [
            (name, insts[::every]) for path in data for name, insts in load_dataset(path, per_image=per_image)
        ]
        if limit:
            datasets = [(name, insts[:limit]) for name, insts in datasets]
        with _status("loading model", quiet):
            predictor = resolve_predictor(backend, model, checkpoint, onnx_dir, flip)
    except (UserError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
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
    with _bar(total, "evaluating", quiet) as advance:
        report, shown = evaluate(datasets, methods, chosen, advance, keep=examples if pictures else 0, errors=errors)
    source = str(onnx_dir or checkpoint or "") or ("bundled" if model in (None, "tiny") else "cached official weights")
    report["model"] = {"type": model_type, "checkpoint": source, "backend": backend}
    report["protocols"] = sorted(chosen)
    report["refine"] = refine
    report["flip"] = flip
    report["errors"] = errors
    typer.echo(table(report))
    if output is not None:
        from .io import write_json

        write_json(report, output)
    if pictures is not None and shown:
        draw_examples(shown, methods, pictures)
    for e in errors:
        typer.echo(f"skipped {e}", err=True)
    if errors:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
