"""Loading checkpoints (errors named clearly) and downloading them from a local HTTP server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from promptseg import build_model, checkpoints
from promptseg.checkpoints import detect_model_type, expected_shapes, load_state_dict
from promptseg.weights import REGISTRY, WeightsEntry
from server_helpers import FileServer


def _fake_state_dict(model_type: str) -> dict[str, torch.Tensor]:
    # Stride-0 views of one number: the shapes of a full model in a few bytes on disk.
    return {k: torch.zeros(1).expand(s) if s else torch.zeros(()) for k, s in expected_shapes(model_type).items()}


def test_detects_every_official_type():
    for name in ("vit_b", "vit_l", "vit_h"):
        assert detect_model_type(_fake_state_dict(name)) == name


def test_build_model_detects_type_and_loads_strictly(tmp_path, small_pair):
    sd = _fake_state_dict("vit_b")
    sd = {k: torch.randn(v.shape) * 0.01 for k, v in sd.items()}
    path = tmp_path / "b.pth"
    torch.save(sd, path)
    model = build_model(checkpoint=path)
    assert model.model_type == "vit_b"
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert model.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])


def test_safetensors_round_trip(tmp_path):
    model = build_model("vit_b")
    path = tmp_path / "w.safetensors"
    checkpoints.save_weights(model, path, {"model_type": "vit_b"})
    again = build_model(checkpoint=path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


@pytest.mark.parametrize(
    "writer, message",
    [
        (lambda p: torch.save([1, 2, 3], p), "not a state dict"),
        (lambda p: p.write_bytes(os.urandom(5000)), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"c" + os.urandom(5000)), "truncated or corrupt"),  # pickle's GLOBAL opcode
        (lambda p: p.write_bytes(b""), "empty"),
    ],
    ids=["list", "random-bytes", "global-opcode", "empty"],
)
def test_bad_files_get_clear_errors(tmp_path, writer, message):
    path = tmp_path / "bad.pth"
    writer(path)
    with pytest.raises(ValueError, match=message):
        build_model("vit_b", checkpoint=path)


def test_any_random_bytes_are_reported_as_corrupt(tmp_path):
    """Damaged files fail in many ways inside the unpickler; each must come out as one clear error."""
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.pth"
    for i in range(300):
        head = bytes([i % 256]) if i < 256 else b""
        path.write_bytes(head + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="truncated or corrupt"):
            load_state_dict(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({k: torch.zeros(v.shape) for k, v in _fake_state_dict("vit_b").items()}, path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_state_dict(cut)


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    path = tmp_path / "evil.pth"
    torch.save({"x": argparse.Namespace(a=1)}, path)
    with pytest.raises(ValueError, match="not loaded for safety"):
        load_state_dict(path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = _fake_state_dict("vit_b")
    sd.pop("mask_decoder.iou_token.weight")
    sd["extra.thing"] = torch.zeros(3)
    path = tmp_path / "keys.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as err:
        build_model("vit_b", checkpoint=path)
    text = str(err.value)
    assert "1 missing keys" in text and "mask_decoder.iou_token.weight" in text
    assert "1 unexpected keys" in text and "extra.thing" in text


def test_other_model_type_is_recognised(tmp_path):
    path = tmp_path / "l.pth"
    torch.save(_fake_state_dict("vit_l"), path)
    with pytest.raises(ValueError, match="looks like a vit_l checkpoint"):
        build_model("vit_b", checkpoint=path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_model("vit_b", checkpoint="/nonexistent/sam.pth")


# --- downloads -------------------------------------------------------------------------


@pytest.fixture
def payload(monkeypatch):
    data = os.urandom(3 * 1024 * 1024 + 123)
    known = WeightsEntry("vit_b", "sa1b", "sam_test.pth", "http://127.0.0.1:9/unused", len(data),
                         hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(REGISTRY, "vit_b.sa1b", known)
    return data


def test_download_good_file(tmp_path, payload, monkeypatch):
    monkeypatch.setenv("PROMPTSEG_HOME", str(tmp_path / "cache"))
    with FileServer(payload) as server:
        path = checkpoints.download("vit_b", url=server.url, quiet=True)
    assert path == tmp_path / "cache" / "sam_test.pth"
    assert path.read_bytes() == payload
    # a second call finds the verified file and fetches nothing
    with FileServer(payload) as server:
        assert checkpoints.download("vit_b", url=server.url, quiet=True) == path
        assert server.requests == []


def test_download_wrong_hash_is_removed(tmp_path, payload, monkeypatch):
    bad = bytearray(payload)
    bad[1000] ^= 0xFF
    with FileServer(bytes(bad)) as server:
        with pytest.raises(ValueError, match="SHA-256"):
            checkpoints.download("vit_b", dest_dir=tmp_path, url=server.url, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_download_interrupted_then_resumed(tmp_path, payload):
    cut = 1024 * 1024 + 7
    with FileServer(payload, cut_first_at=cut) as server:
        with pytest.raises(ConnectionError, match="interrupted|failed|resume"):
            checkpoints.download("vit_b", dest_dir=tmp_path, url=server.url, quiet=True)
        part = tmp_path / "sam_test.pth.part"
        assert part.exists() and 0 < part.stat().st_size < len(payload)
        have = part.stat().st_size
        path = checkpoints.download("vit_b", dest_dir=tmp_path, url=server.url, quiet=True)
    assert server.requests[-1] == f"bytes={have}-"
    assert path.read_bytes() == payload
    assert not part.exists()


def test_download_cli(tmp_path, payload):
    from typer.testing import CliRunner

    from promptseg.cli import app

    with FileServer(payload) as server:
        result = CliRunner().invoke(app, ["download", "vit_b", "--dest", str(tmp_path), "--url", server.url])
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()).read_bytes() == payload


def test_download_cli_error_is_one_line(tmp_path, payload):
    """In a separate process the real vit_b entry applies: the 3 MB served is a short file."""
    import subprocess
    import sys

    with FileServer(payload) as server:
        out = subprocess.run(
            [sys.executable, "-m", "promptseg.cli", "download", "vit_b", "--dest", str(tmp_path), "--url", server.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert "run the same command again to resume" in out.stderr
    assert not (tmp_path / "sam_vit_b_01ec64.pth").exists()
