"""What the commands share: option help, argument parsing, and turning errors into one line."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from ..io import InputPath, os_error_text
from ..predict.loader import BACKENDS
from ..refine import REFINERS

MODEL_HELP = ("Model: tiny (bundled, the default), vit_b, vit_l, vit_h, sam2.1_hiera_t / _s / _b+ / _l (and sam2_...), "
              "or a full weights name (tiny.synth_bsds500, vit_b.sa1b, sam2.1_hiera_t.sav).")
BACKEND_HELP = "torch, or onnx / onnx-int8 (ONNX Runtime; files from --onnx-dir, else exported once into the cache)."
HQ_TOKEN_ONLY_HELP = "HQ-SAM models (vit_*_hq): the HQ token's mask alone, not added to SAM's."
FLIP_HELP = ("Ask each prompt on the image and on its mirror image and average the answers "
             "(test-time augmentation: a second embedding and decoder pass; see the model card).")
REFINE_HELP = (
    "Refine the model's answer: zoom (the model looks again at a crop around the answer, one more "
    "embedding; best for small objects), grabcut (OpenCV GrabCut seeded by the answer and the prompts), "
    "zoom+grabcut, or none."
)


THREADS_HELP = ("Compute threads (default: $PROMPTSEG_THREADS, else the CPUs this process may use, from its "
                "affinity and cgroup quota). On a machine busy with other work, 1 is often much faster.")


def threads_option():
    return typer.Option(None, "--threads", help=THREADS_HELP, show_default=False)


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
    except OSError as exc:  # a full disk, a folder that vanished, ...: what failed and where
        fail(os_error_text(exc))


def parse_floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"{what} {text!r} is not a list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{what} {text!r} holds a value that is not a finite number")
    if len(values) not in n:
        shapes = {2: "X,Y", 3: "X,Y,LABEL", 4: "X0,Y0,X1,Y1"}
        raise UserError(f"{what} {text!r} must be {' or '.join(shapes[k] for k in n)}")
    return values


def _writable_folder(folder: Path, what: str) -> None:
    """`folder` (existing) takes new files; tried by making one, which also holds for root and
    read-only file systems."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from None


def _existing_ancestor(path: Path, what: str) -> Path:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what} {path}: {parent} is a file, not a folder")
            return parent
    return Path(".")


def check_output_file(path: Path, what: str = "--output") -> None:
    """Fail before any work when a file cannot be written at `path`: it is a folder, it lies
    under a file, or its folder takes no new files."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name (e.g. {path / 'mask.png'})")
    folder = path.parent if path.parent.is_dir() else _existing_ancestor(path, what)
    _writable_folder(folder, f"{what} {path}")


def check_output_dir(path: Path, what: str = "--output") -> None:
    """Fail before any work when `path` cannot be (made into) a folder that takes files."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file; give a folder")
    _writable_folder(path if path.is_dir() else _existing_ancestor(path, what), f"{what} {path}")


def check_refine(refine: str | None) -> str | None:
    """The refinement an option names (None for `none`)."""
    if refine is not None and refine not in (*REFINERS, "none"):
        raise UserError(f"--refine {refine!r}: use one of {', '.join(REFINERS)} or none")
    return None if refine == "none" else refine


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


# --- jobs over many images: where they run --------------------------------------------
ENGINE_HELP = "local (this process) or ray (a Ray cluster: pip install 'promptseg[ray]')."


INPUTS_HELP = "Image files, folders and glob patterns; s3://, gs:// or file:// URIs too."


def engine_options():
    """The options `everything`, `engine` and `embed` share: inputs from a manifest, and Ray."""
    return {
        "manifest": typer.Option(None, "--manifest", help="A file of inputs: a text file of paths, one a line, or a "
                                 "CSV / Parquet file with a `path` column (relative paths: from its folder)."),
        "engine": typer.Option("local", "--engine", help=ENGINE_HELP),
        "ray_address": typer.Option(None, "--ray-address", help="Ray cluster to join (auto, ray://host:port); "
                                    "none: start a Ray on this machine for the job and stop it after."),
        "workers": typer.Option("1", "--workers", help="Ray: N workers, or MIN,MAX for a pool that scales."),
        "cpus_per_worker": typer.Option(1.0, "--cpus-per-worker", help="Ray: CPUs per worker (its torch threads)."),
        "gpus_per_worker": typer.Option(0.0, "--gpus-per-worker", help="Ray: GPUs per worker (fractions allowed)."),
        "batch_size": typer.Option(4, "--batch-size", help="Ray: images given to a worker at a time."),
    }


def gather_inputs(inputs: list[str] | None, manifest: Path | None) -> tuple[list[InputPath], list[str]]:
    """Image paths from the arguments (files, folders, globs) and a manifest; plus the inputs
    that matched nothing. Fails when there are none at all."""
    from ..io import expand_inputs, read_manifest

    listed = list(inputs or [])
    if manifest is not None:
        with user_errors():
            listed += read_manifest(manifest)
    if not listed:
        fail("give images (files, folders or glob patterns) or --manifest FILE")
    with user_errors():  # a URI whose store cannot be reached
        paths, missing = expand_inputs(listed)
    if not paths:
        fail(f"no image files found in {' '.join(inputs or []) or manifest}")
    return paths, missing


def ray_options(engine: str, ray_address: str | None, workers: str, cpus_per_worker: float, gpus_per_worker: float,
                batch_size: int):
    """The engine's options checked (UserError naming the bad one); None for the local engine."""
    from ..engine.run import ENGINES, RayOptions, parse_workers

    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        return None
    return RayOptions(address=ray_address, workers=parse_workers(workers), cpus_per_worker=cpus_per_worker,
                      gpus_per_worker=gpus_per_worker, batch_size=batch_size)


def start_job(threads: int | None, output: Path, engine: str, ray_address: str | None, workers: str,
              cpus_per_worker: float, gpus_per_worker: float, batch_size: int):
    """What every job command checks before work: threads set, the output folder writable, the
    engine's options (None for the local engine, else RayOptions). Raises UserError/ValueError."""
    from ..cpu import set_threads

    set_threads(threads)
    check_output_dir(output)
    return ray_options(engine, ray_address, workers, cpus_per_worker, gpus_per_worker, batch_size)


def finish_job(summary, missing: list[str], quiet: bool, line) -> None:
    """A job's end: `line(failed)` (the summary sentence, given the failure count) on stderr unless
    `quiet`, then one `failed:` line per input that matched nothing or failed, and exit status 1
    when there was any."""
    failures = [(m, "no such file, or the pattern matched nothing") for m in missing] + summary.failures
    if not quiet:
        typer.echo(line(len(failures)), err=True)
    for item, why in failures:
        typer.echo(f"failed: {item}: {why}", err=True)
    if failures:
        raise typer.Exit(1)
