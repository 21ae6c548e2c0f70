"""Inputs named by a URI (`s3://bucket/key`, `gs://bucket/key`, `file:///path`, ...), read through
pyarrow's file systems with whatever credentials the environment gives them (for S3: the AWS
variables, `~/.aws`, an instance role; `AWS_ENDPOINT_URL` for an S3-compatible store; for GCS:
Google's application default credentials). Needs pyarrow: pip install 'promptseg[ray]'.

A `RemoteFile` answers what the engine asks of an input path (`name`, `stem`, `suffix`,
`parent`, `resolve()`) and opens for reading; outputs are written to local (or
mounted) folders."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import BinaryIO

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def is_uri(text: object) -> bool:
    """Whether `text` names a file by URI (scheme://...) rather than a local path."""
    if not isinstance(text, str) or "://" not in text:
        return False
    scheme = text.split("://", 1)[0]
    return len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def _filesystem(uri: str):
    """(pyarrow file system, path within it) for `uri`; ValueError for a scheme pyarrow lacks."""
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise ValueError(f"reading {uri} needs pyarrow's file systems: pip install 'promptseg[ray]'") from None
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid / OSError: one message for the user
        raise ValueError(f"cannot open {uri}: {exc} (inputs by URI: s3://, gs://, hdfs:// or file://)") from None


class RemoteFile:
    """One input file named by a URI."""

    def __init__(self, uri: str) -> None:
        if not is_uri(uri):
            raise ValueError(f"not a URI: {uri!r}; expected scheme://location, e.g. s3://bucket/photo.jpg")
        self.uri = uri
        scheme, rest = uri.split("://", 1)
        self.scheme = scheme.lower()
        self._path = PurePosixPath("/" + rest.split("?", 1)[0].lstrip("/"))

    name = property(lambda self: self._path.name)
    stem = property(lambda self: self._path.stem)
    suffix = property(lambda self: self._path.suffix)
    parent = property(lambda self: PurePosixPath(f"/{self.scheme}") / self._path.parent.relative_to("/"))

    def resolve(self) -> RemoteFile:
        return self

    def open(self) -> BinaryIO:
        """A binary stream of the file's bytes; FileNotFoundError when it is not there, ValueError
        (saying why: credentials, network) when it cannot be read."""
        fs, path = _filesystem(self.uri)
        try:
            return fs.open_input_stream(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {self.uri}") from None
        except OSError as exc:
            raise ValueError(f"cannot read {self.uri}: {exc}; check the credentials and the address") from None

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemoteFile({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteFile) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)


def expand_uri(uri: str) -> list[RemoteFile]:
    """The image files a URI names: the file itself, a folder's image files (sorted, not its
    subfolders), or the files matching a glob pattern (`*`, `?`, `[...]`; `**` crosses folders).
    Empty when nothing matches; ValueError when the store cannot be listed."""
    try:
        return _expand(uri)
    except OSError as exc:
        raise ValueError(f"cannot list {uri}: {exc}; check the credentials and the address") from None


def _expand(uri: str) -> list[RemoteFile]:
    import pyarrow.fs as pafs

    scheme, rest = uri.split("://", 1)
    location, query = (rest.split("?", 1) + [""])[:2]
    query = f"?{query}" if query else ""  # options such as endpoint_override, kept on every file

    def remote(p: str) -> RemoteFile:
        return RemoteFile(f"{scheme}://{p}{query}")

    parts = location.split("/")
    wild = [k for k, part in enumerate(parts) if any(c in part for c in "*?[")]
    fs, path = _filesystem(f"{scheme}://{'/'.join(parts[: wild[0]] if wild else parts)}{query}")
    if not wild:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [RemoteFile(uri)]
        if info.type != pafs.FileType.Directory:
            return []
        listing = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        return [remote(i.path) for i in sorted(listing, key=lambda i: i.path)
                if i.type == pafs.FileType.File and PurePosixPath(i.path).suffix.lower() in IMAGE_SUFFIXES]
    listing = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    pattern = glob_regex(path.rstrip("/") + "/" + "/".join(parts[wild[0] :]))
    return [remote(i.path) for i in sorted(listing, key=lambda i: i.path)
            if i.type == pafs.FileType.File and pattern.fullmatch(i.path)]


def glob_regex(pattern: str) -> re.Pattern:
    """A glob pattern as `glob.glob(..., recursive=True)` reads it: `*` and `?` within one folder
    name, `**/` any number of folders, `[...]` a set (`[!...]` its complement)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 1
        elif c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))
