"""Inputs named by URI (`promptseg.remote`), here file:// ones through pyarrow's local file system
(S3 itself: tests/integration/test_scale.py, against a server on 127.0.0.1), and the cluster
examples in docs/cluster, whose promptseg command lines must parse with today's options."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from promptseg import sample_image_path
from promptseg.engine.batch import content_key, output_names
from promptseg.io import expand_inputs, read_image
from promptseg.remote import RemoteFile, glob_regex, is_uri

pytest.importorskip("pyarrow.fs", reason="the ray extra is installed in the test venv (make test)")

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("b/*.jpg", "b/x.jpg", True), ("b/*.jpg", "b/s/x.jpg", False), ("b/**/*.jpg", "b/x.jpg", True),
    ("b/**/*.jpg", "b/s/t/x.jpg", True), ("b/[!x]?.png", "b/ab.png", True), ("b/[!x]?.png", "b/xb.png", False),
    ("b/a.b", "b/axb", False), ("b/**", "b/s/x", True),
])
def test_glob_patterns_read_as_glob_reads_them(pattern, path, matches):
    assert bool(glob_regex(pattern).fullmatch(path)) is matches


def test_file_uris_are_listed_read_and_named_as_paths_are(tmp_path):
    (tmp_path / "sub").mkdir()
    shutil.copy(sample_image_path("coffee"), tmp_path / "a.png")
    shutil.copy(sample_image_path("chelsea"), tmp_path / "sub" / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    base = f"file://{tmp_path}"
    found, missing = expand_inputs([base, f"{base}/**/*.png", f"{base}/none*.png", f"{base}/gone.png"])
    assert found == [RemoteFile(f"{base}/a.png"), RemoteFile(f"{base}/sub/a.png")]  # the folder's, then the glob's new one
    assert missing == [f"{base}/none*.png", f"{base}/gone.png"]
    local, _ = expand_inputs([str(tmp_path / "a.png"), str(tmp_path / "sub" / "a.png")])
    assert output_names(found)[1] == output_names(local)[1] == "sub_a_png"
    assert np.array_equal(read_image(found[0]), read_image(tmp_path / "a.png"))
    assert np.array_equal(read_image(str(found[1])), read_image(tmp_path / "sub" / "a.png"))
    assert content_key(found[0]) == content_key(tmp_path / "a.png")
    assert (found[0].name, found[0].stem, found[0].suffix) == ("a.png", "a", ".png")
    with pytest.raises(FileNotFoundError, match="image file not found: file:///nowhere/x.png"):
        read_image("file:///nowhere/x.png")
    with pytest.raises(ValueError, match=r"not a format Pillow knows"):
        read_image(f"{base}/notes.txt")
    with pytest.raises(ValueError, match=r"cannot open http://example.com/a.png: .*s3://, gs://"):
        expand_inputs(["http://example.com/a.png"])
    assert is_uri("s3://b/k") and not is_uri("/tmp/a.png") and not is_uri("C:\\a.png")


def _promptseg_commands(text: str) -> list[list[str]]:
    lines = [line.strip().lstrip("#").strip() for line in text.splitlines()]
    joined = " ".join(lines).replace("\\ ", " ")
    return [shlex.split(part.split(" cluster_name")[0]) for part in joined.split("promptseg ")[1:]
            if part.split(" ", 1)[0] in ("everything", "engine", "embed")]


@pytest.mark.parametrize("name", ["rayjob.yaml", "ray-cluster.yaml"])
def test_cluster_examples_are_yaml_with_commands_our_cli_takes(name):
    import typer

    from promptseg.cli import app

    text = (DOCS / "cluster" / name).read_text()
    config = yaml.safe_load(text)
    commands = _promptseg_commands(config["spec"]["entrypoint"] if name == "rayjob.yaml" else text)
    assert commands
    group = typer.main.get_command(app)
    for argv in commands:
        command = group.commands[argv[0]]
        args = [a for a in argv[1:] if not a.startswith("'")]
        ctx = command.make_context(argv[0], args)  # raises on an option we do not have
        assert ctx.params["engine"] == "ray" and ctx.params["ray_address"] == "auto"
        with pytest.raises(Exception, match="--no-such-option"):  # the check that would catch a stale example
            command.make_context(argv[0], [*args, "--no-such-option"])
