"""onnxruntime-web, for pages that run the mask decoder in the browser.

The server computes the image embedding once; the page then decodes every click itself with
onnxruntime-web (WebAssembly) and `decoder.onnx`, with no round trip per prompt. The runtime is
not shipped in the package: `promptseg install-web-runtime` fetches the pinned npm release
once, checks its size and SHA-256, and keeps only the files the page loads.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

VERSION = "1.30.0"
TARBALL_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{VERSION}.tgz"
TARBALL_SIZE = 33_106_585
TARBALL_SHA256 = "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71"
# The WebAssembly-only build (a global `ort`) and the SIMD module it loads.
FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def default_dir() -> Path:
    from ..checkpoints import cache_dir

    return cache_dir() / "onnxruntime-web" / VERSION


def is_complete(folder: str | os.PathLike) -> bool:
    return all((Path(folder) / name).is_file() for name in FILES)


def find(folder: str | os.PathLike | None = None) -> Path | None:
    """The runtime folder if its files are all there (`folder`, else the default place)."""
    path = Path(folder) if folder is not None else default_dir()
    return path if is_complete(path) else None


def install(dest: str | os.PathLike | None = None, url: str | None = None, quiet: bool = False,
            timeout: float = 60.0) -> Path:
    """Fetch the pinned onnxruntime-web release (or a mirror of it at `url`) into `dest` and
    keep the page's files; returns the folder. Does nothing when they are already there."""
    from ..checkpoints import fetch_verified

    folder = Path(dest) if dest is not None else default_dir()
    if is_complete(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / f"onnxruntime-web-{VERSION}.tgz"
    fetch_verified(url or TARBALL_URL, tarball, TARBALL_SIZE, TARBALL_SHA256, quiet, timeout,
                   what=f"onnxruntime-web {VERSION}")
    wanted = {f"package/dist/{name}": name for name in FILES}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            name = wanted.pop(member.name, None)
            if name is None or not member.isfile():
                continue
            data = archive.extractfile(member).read()
            tmp = folder / f".{name}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / name)
    if wanted:
        raise ValueError(f"the onnxruntime-web package lacks {', '.join(sorted(wanted))}")
    tarball.unlink()
    return folder

