"""`promptseg synth`: procedural training scenes with exact masks."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    out: Path = typer.Argument(..., help="Folder to write SA-1B pairs (sa_<seed>_<index>.jpg/.json) into."),
    count: int = typer.Option(1000, "--count", "-n", min=1, help="Number of scenes."),
    seed: int = typer.Option(0, "--seed", help="Scenes are a function of (seed, index)."),
    start: int = typer.Option(0, "--start", min=0, help="Index of the first scene."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Write procedural training scenes with exact visible masks (objects, parts, backgrounds)."""
    from ..progress import progress
    from ..train.synth import write_shard

    with progress(count, "scenes", quiet) as advance:
        for _ in write_shard(out, count, seed=seed, start=start):
            advance()
    typer.echo(f"{count} scenes in {out}")
