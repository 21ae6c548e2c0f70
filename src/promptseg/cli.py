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


def resolve_model(model: str | None, checkpoint: Path | None):
    """Build the model the options name; a named type without a checkpoint uses the cached
    official weights."""
    from .checkpoints import OFFICIAL_WEIGHTS, build_model, cache_dir

    if checkpoint is not None:
        return build_model(model, checkpoint=checkpoint)
    if model is None:
        raise UserError(
            "no model given and no default model is bundled yet; pass --model vit_b with --checkpoint PATH, "
            "or fetch official weights first with: promptseg download vit_b"
        )
    known = OFFICIAL_WEIGHTS.get(model)
    if known is None:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(OFFICIAL_WEIGHTS)}")
    cached = cache_dir() / known.filename
    if not cached.is_file():
        raise UserError(
            f"no weights for {model} in {cache_dir()}; run `promptseg download {model}` or pass --checkpoint PATH"
        )
    return build_model(model, checkpoint=cached)


@app.command()
def segment(
    image: Path = typer.Argument(..., help="Image file to segment."),
    point: list[str] = typer.Option(
        [], "--point", "-p", help="X,Y[,LABEL] in pixels; LABEL 1 foreground (default), 0 background. Repeatable."
    ),
    box: str | None = typer.Option(None, "--box", "-b", help="X0,Y0,X1,Y1 in pixels."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model type: vit_b, vit_l, vit_h."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file (.pth or .safetensors)."),
    output: Path = typer.Option(Path("mask.png"), "--output", "-o", help="Mask PNG to write."),
    overlay_path: Path | None = typer.Option(
        None, "--overlay", help="Also write a picture of the mask over the image."
    ),
    multimask: bool = typer.Option(False, "--multimask", help="Write all three candidate masks (OUTPUT_0.png ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (files, scores, areas) on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Segment IMAGE from point and/or box prompts and write the mask as a PNG."""
    import numpy as np

    from .io import overlay, read_image, write_image, write_mask_png
    from .predictor import Predictor, check_prompts

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
        with _status("loading model", quiet):
            sam = resolve_model(model, checkpoint)
        predictor = Predictor(sam)
        t0 = time.perf_counter()
        with _status(f"embedding {image.name}", quiet):
            predictor.set_image(rgb)
        t_embed = time.perf_counter() - t0
        # One click is ambiguous: ask for three candidates and keep the best, as SAM's demo does.
        ambiguous = len(points) == 1 and box_arr is None
        t0 = time.perf_counter()
        masks, scores, _ = predictor.predict(coords, labels, box_arr, multimask_output=multimask or ambiguous)
        t_prompt = time.perf_counter() - t0
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
        "model": sam.model_type,
        "masks": written,
        "best": 0 if not multimask else best,
        "overlay": str(overlay_path) if overlay_path else None,
        "seconds": {"embed": round(t_embed, 3), "prompt": round(t_prompt, 4)},
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        for rec in written:
            typer.echo(f"wrote {rec['path']} (score {rec['score']:.3f}, {rec['area']} px)", err=True)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
