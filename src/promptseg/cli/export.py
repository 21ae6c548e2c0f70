"""`promptseg export`: the model as ONNX files."""

from __future__ import annotations

from pathlib import Path

import typer

from ..checkpoints import load_model
from ..progress import status
from .common import MODEL_HELP, UserError, user_errors


def export(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for encoder.onnx and decoder.onnx."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
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
    with user_errors():
        if quantize not in (None, "int8"):
            raise UserError(f"--quantize must be int8, got {quantize!r}")
        with status("loading model", quiet):
            sam = load_model(model, checkpoint)
        from ..export.exporter import export_model

        with status("exporting", quiet):
            paths = export_model(sam, output, opset=opset, quantize=quantize, return_single_mask=single_mask)
    if not quiet:
        for path in paths.values():
            typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", err=True)
