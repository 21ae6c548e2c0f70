"""What every job over a folder of images guarantees: one output name per input that no other
input of the job can take, a re-run that skips only images whose output was made from the same
file, a bad file reported and skipped while the others go on, and no debris from a run that was
killed while writing."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..io import PARTIAL_SUFFIX, InputPath, RemoteFile, decode_image_bytes, open_input, os_error_text, read_image

# atomic_path's temporary files: .NAME.PID.RANDOM.partial (and .NAME.RANDOM.SUFFIX before the PID)
_PARTIAL = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}" + re.escape(PARTIAL_SUFFIX) + "$")
_OLD_PARTIAL = re.compile(r"^\..+(?P<ext>\.[A-Za-z]+)\.[A-Za-z0-9_]{8}(?P=ext)$")


@dataclass
class BatchSummary:
    """What a job did: images processed, skipped as already done, masks written, and (input,
    why) for every input that failed."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    masks: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    results: list[ItemResult] = field(default_factory=list)  # one per input, in the order they finished

    def progress_text(self, seconds: float) -> str:
        """Masks found, images per minute and failures so far, for a progress display."""
        rate = f"{self.done / (seconds / 60):.1f}" if self.done and seconds > 0 else "-"
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return f"{self.masks} masks, {rate} img/min{failed}"


@dataclass
class Item:
    """One input of a job: its id (from 1, in input order), file, output name and content key;
    for an input named by a URI, its bytes, fetched once (hashed for the key, then decoded and
    copied from them)."""

    image_id: int
    path: InputPath
    name: str
    key: str
    data: bytes | None = None

    def image(self):
        """The input decoded (HxWx3 uint8 RGB, upright): from the fetched bytes, or its file."""
        return read_image(self.path) if self.data is None else decode_image_bytes(self.data, str(self.path))


def output_names(paths: list[InputPath]) -> list[str]:
    """A distinct output name per input, from its file stem; inputs whose stems clash (ignoring
    case, as some file systems do) get their extension, then their parent folders, then a number
    added until no two are the same."""

    def candidates(p: InputPath) -> Iterator[str]:
        name = p.stem
        yield name
        name = f"{name}_{p.suffix.lstrip('.').lower()}" if p.suffix else name
        yield name
        for parent in p.resolve().parent.parts[::-1]:
            name = f"{parent.strip('/') or 'root'}_{name}"
            yield name

    options = [list(candidates(p)) for p in paths]
    level = [0] * len(paths)
    while True:
        names = [options[i][min(level[i], len(options[i]) - 1)] for i in range(len(paths))]
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n.casefold(), []).append(i)
        clashing = [g for g in groups.values() if len(g) > 1]
        if not clashing:
            return names
        advanced = False
        for group in clashing:
            for i in group:
                if level[i] < len(options[i]) - 1:
                    level[i] += 1
                    advanced = True
        if not advanced:  # the same path twice, or names equal to the root: number them
            seen: dict[str, int] = {}
            out = []
            for n in names:
                k = n.casefold()
                seen[k] = seen.get(k, 0) + 1
                out.append(n if seen[k] == 1 else f"{n}_{seen[k]}")
            return out


def content_key(path: InputPath) -> str:
    """SHA-256 of a file's bytes: the key its output records, so a re-run can tell whether an
    output was made from this very file."""
    digest = hashlib.sha256()
    with open_input(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_of(target: Path) -> dict:
    """The source record an output carries: a JSON's `image` entry, or an embedding file's
    metadata (`.safetensors`); raises on an unreadable file."""
    if target.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(target), framework="numpy") as f:
            meta = f.metadata() or {}
        if "original_size" not in meta:
            raise ValueError("not an embedding file")
        return meta
    return json.loads(target.read_text())["image"]


def _done_from(target: Path, item: Item) -> bool:
    """Whether `target` holds this input's result; ValueError when it holds another file's."""
    if not target.exists():
        return False
    try:
        image = _source_of(target)
    except Exception:  # noqa: BLE001 - unreadable in any way: made again
        return False
    key = image.get("source_sha256")
    if key is None or key == item.key:  # None: written before outputs recorded their source
        return True
    raise ValueError(
        f"{target} was made from another file ({image.get('file_name')}, different content); remove it to redo "
        "this image, or write to another output folder"
    )


@dataclass
class ItemResult:
    """What became of one input: status "done", "skipped" (already done) or "failed" (with
    `error`), masks written, seconds taken, and the process that did it."""

    image_id: int
    path: str
    name: str
    status: str
    masks: int = 0
    error: str = ""
    seconds: float = 0.0
    pid: int = 0


def process_one(path: InputPath, image_id: int, name: str, target_of: Callable[[str], Path],
                process: Callable[[Item], int]) -> ItemResult:
    """One input through `process`, unless its target was already made from the same file;
    any failure is caught and described."""
    import time

    started = time.perf_counter()
    result = ItemResult(image_id, str(path), name, "done", pid=os.getpid())
    try:
        data = path.read_bytes() if isinstance(path, RemoteFile) else None  # one fetch per remote input
        key = content_key(path) if data is None else hashlib.sha256(data).hexdigest()
        item = Item(image_id, path, name, key, data)
        if _done_from(target_of(name), item):
            result.status = "skipped"
        else:
            result.masks = process(item)
    except Exception as exc:  # noqa: BLE001 - one input's failure of any kind never stops the job
        result.status, result.error = "failed", _reason(exc)
    result.seconds = time.perf_counter() - started
    return result


def add_result(summary: BatchSummary, result: ItemResult) -> None:
    """Count one input's result into a job's summary."""
    summary.results.append(result)
    if result.status == "skipped":
        summary.skipped += 1
    elif result.status == "failed":
        summary.failures.append((result.path, result.error))
    else:
        summary.done += 1
        summary.masks += result.masks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in `folder` and below
    (those of live processes stay); returns what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for root, _, files in os.walk(folder):
        for name in files:
            m = _PARTIAL.match(name)
            if (m and not _alive(int(m["pid"]))) or (not m and _OLD_PARTIAL.match(name)):
                path = Path(root) / name
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed


def run_batch(paths: list[InputPath], output: Path, target_of: Callable[[str], Path],
              process: Callable[[Item], int], after_each: Callable[[BatchSummary], None] = lambda s: None,
              names: list[str] | None = None) -> BatchSummary:
    """Run `process` (which writes an input's outputs, `target_of(name)` last, and returns its
    mask count) over `paths`, into `output`: debris of killed runs removed first, inputs whose
    target was made from the same file skipped, and any failure of one input recorded in the
    summary while the others go on. `after_each` sees the summary after every input;
    `names` are the inputs' `output_names` when the caller has them already."""
    output.mkdir(parents=True, exist_ok=True)
    remove_partial_files(output)
    summary = BatchSummary(total=len(paths))
    for image_id, (path, name) in enumerate(zip(paths, names or output_names(paths)), start=1):
        add_result(summary, process_one(path, image_id, name, target_of, process))
        after_each(summary)
    return summary


def _reason(exc: Exception) -> str:
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error_text(exc)
    return f"{type(exc).__name__}: {exc}"
