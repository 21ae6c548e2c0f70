"""`promptseg serve` (the web page and HTTP API) and `promptseg install-web-runtime`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cpu import set_threads
from ..predict import load_predictor
from ..progress import status
from .common import FLIP_HELP, MODEL_HELP, UserError, fail, threads_option, user_errors


def serve(
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Weights file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    cache_mb: int = typer.Option(
        1024, "--cache-mb", min=16,
        help="Memory budget (MiB) for images: the embedded-image cache and the uploads being decoded and embedded. "
             "Over it, uploads get 503 with Retry-After.",
    ),
    max_upload_mb: int = typer.Option(25, "--max-upload-mb", min=1, help="Largest accepted upload (MiB)."),
    max_megapixels: float = typer.Option(40.0, "--max-megapixels", min=0.01, help="Largest accepted image."),
    max_everything_prompts: int = typer.Option(
        16384, "--max-everything-prompts", min=1,
        help="Most clicks one everything request may ask for (points_per_side^2 x crops).",
    ),
    everything_seconds: float = typer.Option(
        120.0, "--everything-seconds", min=0.1, help="Model time one everything request may take (s); then 503.",
    ),
    max_everything_jobs: int = typer.Option(
        2, "--max-everything-jobs", min=1, help="Everything requests queued or running at once; more get 503.",
    ),
    web_runtime: str = typer.Option(
        "auto", "--web-runtime",
        help="onnxruntime-web for decoding in the browser: auto (installed by `promptseg install-web-runtime`, "
             "if it was), off, or a folder with its files.",
    ),
    flip: bool = typer.Option(False, "--flip", help=FLIP_HELP + " Prompts are then decoded on the server only."),
    detector: str | None = typer.Option(
        None, "--detector", "-d", help="Turn on text prompts (the page's Find box, POST /v1/images/{id}/text) with "
        "this detector: grounding-dino-tiny, grounding-dino-base, owlv2, a hub id or a saved folder."),
    threads: int | None = threads_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log errors only."),
) -> None:
    """Serve the web page at / and the HTTP API under /v1 (OpenAPI docs at /docs)."""
    with user_errors():
        set_threads(threads)
        from ..server import ort_web

        runtime = None
        if web_runtime == "auto":
            runtime = ort_web.find()
        elif web_runtime != "off":
            runtime = ort_web.find(web_runtime)
            if runtime is None:
                raise UserError(f"--web-runtime {web_runtime}: the folder lacks {', '.join(ort_web.FILES)}; "
                                f"run `promptseg install-web-runtime --dest {web_runtime}`")
        with status("loading model", quiet):
            predictor = load_predictor(model, checkpoint=checkpoint, flip=flip)
        import uvicorn

        from ..server.app import ServerSettings, create_app

        settings = ServerSettings(
            max_upload_bytes=max_upload_mb * 2**20, max_pixels=int(max_megapixels * 1e6), cache_bytes=cache_mb * 2**20,
            web_runtime=runtime, flip=flip, max_everything_prompts=max_everything_prompts,
            everything_seconds=everything_seconds, max_everything_jobs=max_everything_jobs, detector=detector,
        )
        with status("loading the detector", quiet or detector is None):
            app_ = create_app(predictor, settings)
    if not quiet:
        typer.echo(f"promptseg serving {predictor.model_type} at http://{host}:{port}/ (API docs: /docs)", err=True)
        if flip:
            typer.echo("answers are averaged with the mirror image's (--flip); decoding in the browser is off", err=True)
        elif runtime is None:
            typer.echo("decoding in the browser is off (run `promptseg install-web-runtime` to turn it on)", err=True)
        if detector is None:
            typer.echo("text prompts are off (start with --detector to turn them on)", err=True)
    uvicorn.run(app_, host=host, port=port, log_level="warning" if quiet else "info")


def install_web_runtime(
    dest: Path | None = typer.Option(None, "--dest", help="Folder for the files (default: the cache, where serve looks)."),
    url: str | None = typer.Option(None, "--url", help="A mirror of the npm tarball."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Fetch onnxruntime-web (pinned release, checked by SHA-256) so that the web page can
    decode prompts in the browser."""
    from ..server import ort_web

    try:
        folder = ort_web.install(dest, url=url, quiet=quiet)
    except (ConnectionError, ValueError, OSError) as exc:
        fail(str(exc))
    if not quiet:
        typer.echo(f"onnxruntime-web {ort_web.VERSION} in {folder}", err=True)
