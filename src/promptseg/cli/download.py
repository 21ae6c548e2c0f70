"""`promptseg download`: published weights into the cache, verified."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import fail


def download(
    model: str = typer.Argument(..., help="Published weights: vit_b, vit_l, vit_h, sam2.1_hiera_t, _s, _b+, _l, sam2_hiera_t, ..., vit_t (MobileSAM), "
    "vit_b_hq, vit_l_hq, vit_h_hq, vit_tiny_hq (HQ-SAM), vit_b.hf, vit_l.hf, vit_h.hf (Hugging Face's format)."),
    dest: Path | None = typer.Option(None, "--dest", help="Folder (default: the cache, $PROMPTSEG_HOME)."),
    url: str | None = typer.Option(None, "--url", help="Fetch from this mirror instead of the published URL."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Fetch published weights, resume a partial download, and verify size and SHA-256 (where none is
    published, as for SAM 2, MobileSAM, HQ-SAM and Hugging Face's files: the length the server states,
    and the SHA-256 is printed)."""
    from ..checkpoints import download as fetch

    try:
        path = fetch(model, dest_dir=dest, url=url, quiet=quiet)
    except (ValueError, ConnectionError, OSError) as exc:
        fail(str(exc))
    typer.echo(str(path))
