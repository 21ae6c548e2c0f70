"""onnxruntime-web for in-browser decoding: the installer (against a local HTTP server serving a
package the test makes) and the server's options for it."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile

import pytest

from promptseg.server import ort_web
from server_helpers import FileServer


def npm_package(files: dict[str, bytes]) -> bytes:
    """A .tgz laid out like the npm package (files under package/dist/)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in {"package/package.json": b"{}", **{f"package/dist/{k}": v for k, v in files.items()}}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pin(monkeypatch, tgz: bytes) -> None:
    monkeypatch.setattr(ort_web, "TARBALL_SIZE", len(tgz))
    monkeypatch.setattr(ort_web, "TARBALL_SHA256", hashlib.sha256(tgz).hexdigest())


FILES = {name: f"contents of {name}".encode() * 100 for name in ort_web.FILES}


def test_install_keeps_the_page_files_only_and_is_idempotent(tmp_path, monkeypatch):
    tgz = npm_package({**FILES, "ort.webgpu.min.js": b"not needed"})
    pin(monkeypatch, tgz)
    dest = tmp_path / "ort"
    with FileServer(tgz, name="onnxruntime-web.tgz") as server:
        assert ort_web.install(dest, url=server.url, quiet=True) == dest
        assert ort_web.install(dest, url=server.url, quiet=True) == dest  # already there: nothing fetched
    assert len(server.requests) == 1
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert ort_web.find(dest) == dest and ort_web.find(tmp_path) is None


def test_install_refuses_a_tampered_or_incomplete_package(tmp_path, monkeypatch):
    good = npm_package(FILES)
    pin(monkeypatch, good)
    evil = bytearray(good)
    evil[-30] ^= 0xFF
    with FileServer(bytes(evil), name="x.tgz") as server:
        with pytest.raises(ValueError, match="SHA-256"):
            ort_web.install(tmp_path / "a", url=server.url, quiet=True)
    assert ort_web.find(tmp_path / "a") is None and not list((tmp_path / "a").iterdir())

    partial = npm_package({k: v for k, v in FILES.items() if k.endswith(".js")})
    pin(monkeypatch, partial)
    with FileServer(partial, name="x.tgz") as server:
        with pytest.raises(ValueError, match="lacks"):
            ort_web.install(tmp_path / "b", url=server.url, quiet=True)


def test_install_cli_and_serve_option_errors(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "promptseg.cli", *args], capture_output=True, text=True,
                              timeout=120)

    res = cli("install-web-runtime", "--dest", str(tmp_path / "r"), "--url", "http://127.0.0.1:9/none.tgz", "--quiet")
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "cannot reach" in res.stderr
    res = cli("serve", "--web-runtime", str(tmp_path), "--port", "0")
    assert res.returncode == 1 and "install-web-runtime --dest" in res.stderr and "Traceback" not in res.stderr
