"""`promptseg train`: SAM's training recipe on a TOML config."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cpu import set_threads
from .common import threads_option, user_errors


def train(
    config: Path = typer.Argument(..., help="TOML training config (see configs/tiny.toml)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start again instead of resuming from the output folder."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop after this many steps (resume later)."),
    threads: int | None = threads_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train or fine-tune a model with SAM's recipe (simulated interactive prompts, focal+dice, IoU head)."""
    from ..train.loop import TrainConfig
    from ..train.loop import train as run_training

    with user_errors():
        set_threads(threads)
        cfg = TrainConfig.from_file(config)
        path = run_training(cfg, resume=not fresh, quiet=quiet, max_steps=max_steps)
    typer.echo(str(path))
