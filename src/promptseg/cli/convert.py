"""`promptseg convert`: a checkpoint into our format or Hugging Face's."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import user_errors

FORMATS = ("promptseg", "hf")


def convert(
    source: Path = typer.Argument(..., help="A checkpoint: Meta's .pth/.pt, ours (.safetensors), or Hugging Face's "
                                  "(a folder with config.json, or its model.safetensors)."),
    target: Path = typer.Argument(..., help="promptseg: a .safetensors file; hf: a folder."),
    to: str = typer.Option(..., "--to", help="promptseg (our .safetensors) or hf (a SamModel folder for transformers)."),
    model: str | None = typer.Option(None, "--model", "-m", help="The architecture, if the file's is not detected."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Convert weights between formats, so a model fine-tuned here goes back to `transformers`
    (and Meta's or Hugging Face's files become ours)."""
    from ..checkpoints import build_model, save_weights
    from ..hf_format import write_hf

    with user_errors():
        if to not in FORMATS:
            raise ValueError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
        sam = build_model(model, checkpoint=source)
        if to == "hf":
            if target.exists() and not target.is_dir():
                raise ValueError(f"{target} is a file; --to hf writes a folder")
            write_hf(sam, target)
        else:
            if target.is_dir() or target.suffix != ".safetensors":
                raise ValueError(f"--to promptseg writes a .safetensors file, not {target}")
            save_weights(sam, target, metadata={"model_type": sam.model_type, "converted_from": source.name})
    if not quiet:
        typer.echo(f"{source} ({sam.model_type}) -> {target} ({to})", err=True)
