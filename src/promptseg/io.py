"""Reading images (EXIF orientation, modes, bit depths) and writing masks and overlays."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .remote import IMAGE_SUFFIXES, RemoteFile, expand_uri, is_uri

ImageLike = str | os.PathLike | RemoteFile | Image.Image | np.ndarray
InputPath = Path | RemoteFile  # an input file of a job: a local path, or a URI (s3://, gs://, file://)


SAMPLES = ("coffee.png", "chelsea.png")  # bundled photos (scikit-image's data, CC0)
# The longest side over the shortest: the model sees images scaled to a fixed longest side, and
# beyond this the short side would shrink to nothing.
MAX_ASPECT_RATIO = 512


def check_image_shape(height: int, width: int) -> None:
    """Raise ValueError, saying what to do, for an image the model cannot take: empty, or
    longer than MAX_ASPECT_RATIO times its width (or the other way round)."""
    if height < 1 or width < 1:
        raise ValueError(f"the image is {width}x{height} pixels: it is empty")
    if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise ValueError(
            f"the image is {width}x{height} pixels, an aspect ratio beyond {MAX_ASPECT_RATIO}:1 that the model "
            "cannot take; crop it into pieces or pad its short side"
        )


def sample_image_path(name: str = "coffee.png") -> Path:
    """Path of a photo bundled with the package (`coffee.png`, `chelsea.png`; the name
    without `.png` works too)."""
    if name in {Path(s).stem for s in SAMPLES}:
        name += ".png"
    path = Path(str(resources.files("promptseg") / "data" / "samples" / name))
    if not path.is_file():
        raise FileNotFoundError(f"no bundled sample named {name!r}; try {' or '.join(map(repr, SAMPLES))}")
    return path


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "RGB":
        return np.asarray(img).copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels are composited on white, as image viewers show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB")).copy()
    return np.asarray(img.convert("RGB")).copy()


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Normalise an array image to HxWx3 uint8 RGB (gray, RGBA, 16-bit and [0,1] floats accepted)."""
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"expected a numpy array image, got {type(arr).__name__}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"image array has shape {arr.shape}; expected HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image array has shape {arr.shape}: it is empty")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError("a float image must hold finite values in [0, 1]; scale it or pass uint8")
        arr = (arr * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"image array has dtype {arr.dtype}; pass uint8 (or uint16, or float in [0, 1])")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _bomb_message(exc: Image.DecompressionBombError) -> str:
    return f"{exc} If you trust this file, raise PIL.Image.MAX_IMAGE_PIXELS."


def read_image(source: ImageLike) -> np.ndarray:
    """Read a path, a URI (s3://, gs://, file://: `promptseg.remote`), a PIL image or an array
    into an HxWx3 uint8 RGB array, upright per its EXIF tag.

    A file that cannot be decoded (not an image, truncated, a decompression bomb) raises
    ValueError saying why; a missing file FileNotFoundError."""
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    if isinstance(source, Image.Image):
        try:  # a PIL image opened by the caller is decoded lazily, here
            return _pil_to_rgb(source)
        except Image.DecompressionBombError as exc:
            raise ValueError(f"cannot read the image: {_bomb_message(exc)}") from None
        except _READ_ERRORS as exc:
            raise ValueError(f"cannot read the image ({exc}); is it a complete image file?") from None
    if is_uri(source):
        source = RemoteFile(source)
    if isinstance(source, RemoteFile):
        return decode_image_bytes(source.read_bytes(), source.uri)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"cannot read an image from a {type(source).__name__}; pass a path, PIL image or array")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file")
    return _decode(path, str(path))


def decode_image_bytes(data: bytes, label: str) -> np.ndarray:
    """An image file's bytes (fetched from wherever `label` names) decoded as `read_image` decodes
    a file, with its errors."""
    return _decode(BytesIO(data), label)


def _decode(file, label: str) -> np.ndarray:
    try:
        with Image.open(file) as img:
            img.load()
            return _pil_to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"cannot read {label}: {_bomb_message(exc)}") from None
    except UnidentifiedImageError:  # its message names the file object, not the file
        raise ValueError(f"cannot read {label} as an image (not a format Pillow knows); is it an image file?") from None
    except _READ_ERRORS as exc:
        raise ValueError(f"cannot read {label} as an image ({exc}); is it a complete image file?") from None


def open_input(path: InputPath) -> BinaryIO:
    """An input file's bytes as a binary stream, local or named by a URI."""
    return path.open() if isinstance(path, RemoteFile) else open(path, "rb")


def input_path(text: str | os.PathLike) -> InputPath:
    """An input as the engine keeps it: a `RemoteFile` for a URI, else a Path."""
    return RemoteFile(text) if is_uri(text) else Path(text)


PARTIAL_SUFFIX = ".partial"


def os_error_text(exc: OSError) -> str:
    """An OSError as one line: what failed and on which file ("No space left on device: out/a.json")."""
    return f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (.NAME.PID.RANDOM.partial); rename it into place only
    if the block succeeds. A process killed meanwhile leaves the temporary file, which batch
    jobs remove on their next run (`promptseg.engine.batch.remove_partial_files`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_mask_png(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write a boolean HxW mask as an 8-bit PNG (0 background, 255 object)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask to write must be HxW, got shape {mask.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray((mask > 0).astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")


def mask_colors(n: int, seed: int = 0) -> np.ndarray:
    """n distinct, saturated colours (n x 3 uint8), the first a clear blue."""
    if n == 0:
        return np.zeros((0, 3), np.uint8)
    golden = 0.618033988749895
    hues = (0.6 + np.arange(n) * golden) % 1.0
    rng = np.random.default_rng(seed)
    sat = 0.65 + 0.3 * rng.random(n) if n > 1 else np.array([0.8])
    hsv = np.stack([hues, sat, np.full(n, 0.95)], axis=1)
    img = Image.fromarray((hsv[None] * 255).astype(np.uint8), mode="HSV").convert("RGB")
    return np.asarray(img)[0]


def overlay(
    image: np.ndarray,
    masks: np.ndarray | list[np.ndarray],
    alpha: float = 0.5,
    colors: np.ndarray | None = None,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    captions: list[str] | None = None,
) -> np.ndarray:
    """Draw masks (each in its own colour, with an outline) and prompts over an RGB image;
    `captions`, one per mask, are written on a tag in the mask's colour at its top-left corner."""
    import cv2

    out = np.asarray(image).astype(np.float32).copy()
    masks = [np.asarray(m, dtype=bool) for m in (masks if isinstance(masks, list) else list(masks))]
    colors = mask_colors(len(masks)) if colors is None else np.asarray(colors)
    # Largest first so small masks stay visible on top.
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for i in order:
        m = masks[i]
        out[m] = out[m] * (1 - alpha) + colors[i].astype(np.float32) * alpha
    out = out.clip(0, 255).astype(np.uint8)
    for i in order:
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colors[i]), 1)
    scale = max(2, round(max(out.shape[:2]) / 200))
    if captions is not None:
        _draw_captions(out, masks, colors, captions, scale)
    if boxes is not None:
        for box in np.asarray(boxes, dtype=float).reshape(-1, 4):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), max(1, scale // 2))
    if points is not None:
        labels = np.ones(len(points), int) if labels is None else np.asarray(labels)
        for (x, y), lab in zip(np.asarray(points, dtype=float).reshape(-1, 2), labels.reshape(-1)):
            color = (0, 220, 0) if lab == 1 else (230, 0, 0)
            cv2.circle(out, (int(round(x)), int(round(y))), scale * 2, (255, 255, 255), -1)
            cv2.circle(out, (int(round(x)), int(round(y))), int(scale * 1.5), color, -1)
    return out


def _draw_captions(out: np.ndarray, masks: list[np.ndarray], colors: np.ndarray, captions: list[str],
                   scale: int) -> None:
    import cv2

    font, size, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.2 * scale, max(1, scale // 3)
    for mask, color, text in zip(masks, colors, captions):
        ys, xs = np.nonzero(mask)
        if not len(xs) or not text:
            continue
        (tw, th), base = cv2.getTextSize(text, font, size, thick)
        x = int(min(xs.min(), out.shape[1] - tw - 2))
        y = int(max(ys.min(), th + base + 2))
        color = tuple(int(c) for c in color)
        cv2.rectangle(out, (max(0, x), y - th - base - 2), (x + tw + 2, y), color, -1)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(out, text, (max(0, x) + 1, y - base - 1), font, size, ink, thick, cv2.LINE_AA)


def write_image(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write an RGB uint8 array; the format follows the file extension."""
    with atomic_path(path) as tmp:
        fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format=fmt)


def expand_inputs(inputs: list[str]) -> tuple[list[InputPath], list[str]]:
    """Files, folders (their image files, sorted) and glob patterns -> image paths, plus
    the inputs that matched nothing. URIs (s3://, gs://, file://) are listed through pyarrow's
    file systems and come back as `RemoteFile`s."""
    import glob

    found: list[InputPath] = []
    missing: list[str] = []
    for item in inputs:
        if is_uri(item):
            matches = expand_uri(item)
            found += matches
            if not matches:
                missing.append(item)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            found += matches
            if not matches:
                missing.append(item)
        elif Path(item).is_dir():
            found += sorted(p for p in Path(item).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif Path(item).exists():
            found.append(Path(item))
        else:
            missing.append(item)
    seen, unique = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, missing


def read_manifest(path: str | os.PathLike) -> list[str]:
    """The inputs a manifest lists: a text file of paths (one a line; blank lines and lines
    starting with # skipped), or a CSV or Parquet file with a `path` column. Relative paths are
    taken from the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("a Parquet manifest needs pyarrow: pip install 'promptseg[ray]'") from None
        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise ValueError(f"manifest {path} has no `path` column (columns: {', '.join(table.column_names)})")
        entries = [str(v) for v in table.column("path").to_pylist() if v]
    elif suffix == ".csv":
        import csv

        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise ValueError(f"manifest {path} has no `path` column (header: {', '.join(reader.fieldnames or [])})")
            entries = [row["path"].strip() for row in reader if (row["path"] or "").strip()]
    else:
        lines = (line.strip() for line in path.read_text().splitlines())
        entries = [line for line in lines if line and not line.startswith("#")]
    base = path.parent
    return [e if "://" in e or Path(e).is_absolute() else str(base / e) for e in entries]


def write_json(obj, path: str | os.PathLike) -> None:
    """Write JSON atomically: readers never see a half-written file."""
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))
