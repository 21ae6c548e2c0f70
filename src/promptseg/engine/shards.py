"""A finished job's outputs in SA-1B's distribution layout: tar files of image + JSON pairs
(`sa_000000.tar`, ...), and a Parquet index of every input for downstream jobs."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from ..io import InputPath, RemoteFile, atomic_path
from .batch import ItemResult
from .jobs import JobSpec

INDEX_NAME = "index.parquet"


def check_shardable(spec: JobSpec) -> None:
    """ValueError for a job whose outputs are not SA-1B image + JSON pairs."""
    if spec.kind == "embed" or (spec.kind == "everything" and spec.fmt != "sa1b"):
        raise ValueError("--shards packs SA-1B image + JSON pairs: it takes everything's sa1b format or engine")


def shard_pairs(spec: JobSpec, paths: list[InputPath], names: list[str]) -> list[tuple[str, InputPath, str, Path, str]]:
    """(output name, image file, its name in a tar, JSON file, its name in a tar) of every input whose result
    is there, in input order. The data engine's pairs go in as written (`sa_NAME.ext`,
    `sa_NAME.json`); everything mode's JSON goes in as `NAME.json` beside its input image as
    `NAME.ext`, so the pair shares a stem as SA-1B's do."""
    check_shardable(spec)
    pairs = []
    for path, name in zip(paths, names):
        target = spec.target(name)
        if not target.is_file():
            continue
        if spec.kind == "engine":
            image = spec.folder / json.loads(target.read_text())["image"]["file_name"]
            pairs.append((name, image, image.name, target, target.name))
        else:
            pairs.append((name, path, f"{name}{path.suffix.lower()}", target, target.name))
    return pairs


def write_shards(spec: JobSpec, paths: list[InputPath], names: list[str], per_shard: int) -> dict[str, str]:
    """Tar files of `per_shard` pairs each into the job's folder (each written atomically; old
    ones beyond the new count removed); returns the tar file name of each output name."""
    if not (isinstance(per_shard, int) and per_shard >= 1):
        raise ValueError(f"--shards must be a number of images per tar file >= 1, got {per_shard!r}")
    pairs = shard_pairs(spec, paths, names)
    written, shard_of = [], {}
    for k in range(0, len(pairs), per_shard):
        target = spec.folder / f"sa_{k // per_shard:06d}.tar"
        with atomic_path(target) as tmp, tarfile.open(tmp, "w") as tar:
            for name, image, image_name, doc, doc_name in pairs[k : k + per_shard]:
                _add(tar, image, image_name)
                tar.add(doc, arcname=doc_name)
                shard_of[name] = target.name
        written.append(target)
    for old in spec.folder.glob("sa_[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if old not in written:
            old.unlink()
    return shard_of


def _add(tar: tarfile.TarFile, source: InputPath, arcname: str) -> None:
    """A file into `tar`: a local one as it is, one named by a URI read through its file system."""
    if not isinstance(source, RemoteFile):
        tar.add(source, arcname=arcname)
        return
    data = source.read_bytes()
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_index(spec: JobSpec, results: list[ItemResult], shards: dict[str, str] | None = None) -> Path:
    """`index.parquet`: one row per input (path, image_id, name, status, masks, error, seconds,
    output, shard), in input order; the masks of an image skipped as already done are read from
    its result."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("the Parquet index needs pyarrow: pip install 'promptseg[ray]'") from None

    rows = sorted(results, key=lambda r: r.image_id)
    masks = []
    for r in rows:
        count = r.masks
        if r.status == "skipped" and spec.kind != "embed":
            try:
                count = len(json.loads(spec.target(r.name).read_text())["annotations"])
            except (OSError, ValueError, KeyError):
                count = -1
        masks.append(count)
    table = pa.table({
        "path": [r.path for r in rows],
        "image_id": pa.array([r.image_id for r in rows], pa.int64()),
        "name": [r.name for r in rows],
        "status": [r.status for r in rows],
        "masks": pa.array(masks, pa.int64()),
        "error": [r.error for r in rows],
        "seconds": pa.array([r.seconds for r in rows], pa.float64()),
        "output": [str(spec.target(r.name)) if r.status != "failed" else "" for r in rows],
        "shard": [(shards or {}).get(r.name, "") for r in rows],
    })
    path = spec.folder / INDEX_NAME
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))
    return path
