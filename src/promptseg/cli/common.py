"""What the commands share: option help, argument parsing, and turning errors into one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from ..predict.loader import BACKENDS
from ..refine import REFINERS

MODEL_HELP = "Model: tiny (bundled, the default), vit_b, vit_l, vit_h, or a full weights name (tiny.synth_bsds500, vit_b.sa1b)."
BACKEND_HELP = "torch, or onnx / onnx-int8 (ONNX Runtime; files from --onnx-dir, else exported once into the cache)."
FLIP_HELP = ("Ask each prompt on the image and on its mirror image and average the answers "
             "(test-time augmentation: a second embedding and decoder pass; see the model card).")
REFINE_HELP = (
    "Refine the model's answer: zoom (the model looks again at a crop around the answer, one more "
    "embedding; best for small objects), grabcut (OpenCV GrabCut seeded by the answer and the prompts), "
    "zoom+grabcut, or none."
)


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors the user can fix (bad options, files, values) end the command with one line."""
    try:
        yield
    except (UserError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))


def parse_floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"{what} {text!r} is not a list of numbers") from None
    if len(values) not in n:
        shapes = {2: "X,Y", 3: "X,Y,LABEL", 4: "X0,Y0,X1,Y1"}
        raise UserError(f"{what} {text!r} must be {' or '.join(shapes[k] for k in n)}")
    return values


def check_refine(refine: str | None) -> str | None:
    """The refinement an option names (None for `none`)."""
    if refine is not None and refine not in (*REFINERS, "none"):
        raise UserError(f"--refine {refine!r}: use one of {', '.join(REFINERS)} or none")
    return None if refine == "none" else refine


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
