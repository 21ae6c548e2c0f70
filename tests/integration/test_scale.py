"""Jobs over many images on Ray Data, against the local engine: the same outputs byte for byte,
resuming, a corrupt image recorded, a worker process killed mid-run, a cluster joined by
address, and `promptseg embed` (whose files `segment --embedding` reads). Every Ray here is
started by the tests on this machine (2 CPUs) and stopped after."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run
from promptseg import sample_image_path

pytest.importorskip("ray", reason="the ray extra is installed in the test venv (make test)")

GRID = ["--points-per-side", "6", "--quiet"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Five small real photos and, in the middle of them by name, a file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("coffee", "chelsea"):
        img = Image.open(sample_image_path(f"{name}.png")).convert("RGB")
        img.resize((img.width // 2, img.height // 2)).save(folder / f"{name}.png")
        img.resize((img.width // 3, img.height // 3)).save(folder / f"{name}_third.jpg")
    img.crop((0, 0, 200, 150)).save(folder / "crop.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG not really")
    return folder


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ray_engine_writes_what_the_local_engine_writes_and_resumes(photos, tmp_path):
    # one thread, as each Ray worker here has one CPU: then even the scores agree to the bit
    local = run("everything", photos, "-o", tmp_path / "local", "--threads", "1", *GRID)
    assert local.returncode == 1 and "failed: " in local.stderr and "corrupt.png" in local.stderr
    # a resumed job: a stopped run had done two of the images, Ray does the rest
    partial = tmp_path / "ray"
    shutil.copytree(tmp_path / "local", partial)
    for p in partial.iterdir():
        if not p.name.startswith(("coffee.", "coffee_overlay", "crop")):
            p.unlink()
    assert len(list(partial.iterdir())) == 4
    out = run("everything", photos, "-o", partial, "--engine", "ray", "--workers", "2", "--batch-size", "1",
              *GRID[:-1])
    assert out.returncode == 1, out.stderr
    assert "6 images: 3 segmented" in out.stderr and "2 already done, 1 failed" in out.stderr
    assert out.stderr.count("failed: ") == 1 and "corrupt.png: cannot read" in out.stderr
    assert "Traceback" not in out.stderr
    ours, theirs = _outputs(tmp_path / "local"), _outputs(partial)
    assert sorted(ours) == sorted(theirs) and len(ours) == 10  # a JSON and an overlay per photo
    for name, data in ours.items():  # the same bytes: RLE strings, boxes, scores, overlays
        assert theirs[name] == data, name
    assert len(json.loads(ours["coffee.json"])["annotations"]) > 0


def test_engine_and_embed_on_ray_match_local(photos, tmp_path):
    """The data engine's shard and the embedding files, on either engine."""
    args = [photos / "coffee.png", photos / "chelsea_third.jpg", photos / "corrupt.png"]
    for engine in ("local", "ray"):
        out = run("engine", *args, "-o", tmp_path / f"shard_{engine}", "--engine", engine, "--threads", "1", *GRID)
        assert out.returncode == 1 and "corrupt.png" in out.stderr, out.stderr
        out = run("embed", *args, "-o", tmp_path / f"emb_{engine}", "--engine", engine, "--threads", "1", "--quiet")
        assert out.returncode == 1 and "corrupt.png" in out.stderr, out.stderr
    assert _outputs(tmp_path / "shard_local") == _outputs(tmp_path / "shard_ray")
    from safetensors.numpy import load_file

    names = sorted(p.name for p in (tmp_path / "emb_local").iterdir())
    assert names == ["chelsea_third.safetensors", "coffee.safetensors"]
    for name in names:
        a, b = load_file(tmp_path / "emb_local" / name), load_file(tmp_path / "emb_ray" / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_embed_then_segment_from_the_file(photos, tmp_path):
    """`embed` once, then `segment --embedding` answers as `segment` on the image; a re-run of
    embed skips what is done; the wrong image's embedding is refused."""
    image = photos / "coffee.png"
    out = run("embed", image, photos / "crop.png", "-o", tmp_path / "emb")
    assert out.returncode == 0, out.stderr
    assert "2 embedded" in out.stderr
    again = run("embed", image, photos / "crop.png", "-o", tmp_path / "emb")
    assert "0 embedded, 2 already done" in again.stderr
    for args, target in (([], "plain.png"), (["--embedding", tmp_path / "emb" / "coffee.safetensors"], "file.png")):
        res = run("segment", image, "--point", "150,100", "--refine", "none", "-o", tmp_path / target, "--json", *args)
        assert res.returncode == 0, res.stderr
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("plain.png", "file.png"))
    assert np.array_equal(a, b) and a.any()
    assert json.loads(res.stdout)["seconds"]["embed"] < 1.0
    wrong = run("segment", photos / "crop.png", "--point", "50,50", "--embedding", tmp_path / "emb" / "coffee.safetensors")
    assert wrong.returncode == 1 and "is the embedding of a 300x200 image" in wrong.stderr


def test_manifest_lists_the_inputs(photos, tmp_path):
    (tmp_path / "list.txt").write_text(f"# photos\n{photos / 'crop.png'}\n\n{photos / 'coffee.png'}\n")
    (tmp_path / "list.csv").write_text(f"path,split\n{photos / 'crop.png'},a\n{photos / 'coffee.png'},b\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": [str(photos / "crop.png"), str(photos / "coffee.png")]}), tmp_path / "list.parquet")
    for manifest in ("list.txt", "list.csv", "list.parquet"):
        out = run("embed", "--manifest", tmp_path / manifest, "-o", tmp_path / manifest.replace(".", "_"), "--quiet")
        assert out.returncode == 0, out.stderr
        assert sorted(p.name for p in (tmp_path / manifest.replace(".", "_")).iterdir()) == [
            "coffee.safetensors", "crop.safetensors"]
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    out = run("embed", "--manifest", tmp_path / "bad.csv", "-o", tmp_path / "x")
    assert out.returncode == 1 and "has no `path` column" in out.stderr
    out = run("embed", "-o", tmp_path / "x")
    assert out.returncode == 1 and "give images" in out.stderr
    # without the extra installed: one line saying how to get it
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    out = run("embed", photos / "crop.png", "-o", tmp_path / "y", "--engine", "ray",
              env={"PYTHONPATH": str(fake.parent)})
    assert out.returncode == 1 and "pip install 'promptseg[ray]'" in out.stderr and "Traceback" not in out.stderr
    out = run("embed", photos / "crop.png", "-o", tmp_path / "y", "--engine", "ray", "--workers", "3,1")
    assert out.returncode == 1 and "--workers must be N or MIN,MAX" in out.stderr
    out = run("everything", photos / "crop.png", "-o", tmp_path / "z", "--format", "coco", "--shards", "2")
    assert out.returncode == 1 and "--shards packs SA-1B image + JSON pairs" in out.stderr
    assert not (tmp_path / "z").exists() or not any((tmp_path / "z").rglob("*.json"))


def test_a_killed_worker_is_replaced_and_every_image_is_written_once(photos, tmp_path):
    """Kill a worker actor's process after its first image: Ray starts it again and runs its
    batch again; the job finishes with every image once in the output."""
    from promptseg.engine.jobs import JobSpec
    from promptseg.engine.ray_engine import run_on_ray
    from promptseg.engine.run import RayOptions

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(8):
        shutil.copy(photos / ("crop.png" if i % 2 else "chelsea_third.jpg"), inputs / f"img{i}{'.png' if i % 2 else '.jpg'}")
    paths = sorted(inputs.iterdir())
    spec = JobSpec("everything", str(tmp_path / "out"), generator={"points_per_side": 6}, overlays=False)
    killed: list[int] = []

    def kill_first_worker(summary):
        if not killed and summary.results:
            killed.append(summary.results[-1].pid)
            os.kill(killed[0], signal.SIGKILL)

    names = [p.stem for p in paths]
    summary = run_on_ray(spec, paths, names, RayOptions(workers=(2, 2), batch_size=1, num_cpus=2), kill_first_worker)
    assert killed and not summary.failures
    assert summary.done + summary.skipped == len(paths) == len(summary.results)
    assert sorted(r.image_id for r in summary.results) == list(range(1, 9))  # each image reported once
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(f"{n}.json" for n in names)  # once each, no debris
    assert any(r.pid != killed[0] for r in summary.results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_joining_a_running_cluster_by_address(photos, tmp_path):
    """`ray start --head` on 127.0.0.1, a job given --ray-address, then the cluster stopped."""
    ray_cli = Path(sys.executable).with_name("ray")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                            "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert start.returncode == 0, start.stderr
    try:
        out = run("everything", photos / "crop.png", photos / "coffee.png", "-o", tmp_path / "out", "--engine", "ray",
                  "--ray-address", f"127.0.0.1:{port}", *GRID, env={"RAY_USAGE_STATS_ENABLED": "0"})
        assert out.returncode == 0, out.stderr
        assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["coffee.json", "crop.json"]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_shards_hold_every_pair_once_and_read_back_as_sa1b(photos, tmp_path):
    """`--shards 2` on Ray: tar files of image + JSON pairs, every image once, that our SA-1B
    reader reads after unpacking; index.parquet has a row per input, failures included, and a
    re-run (here local) keeps the mask counts of the images it skips."""
    import tarfile

    import pyarrow.parquet as pq

    from promptseg.train.data import read_sa1b

    out = tmp_path / "shard"
    res = run("engine", photos, "-o", out, "--engine", "ray", "--shards", "2", *GRID)
    assert res.returncode == 1 and "corrupt.png" in res.stderr, res.stderr
    tars = sorted(out.glob("sa_*.tar"))
    assert [t.name for t in tars] == ["sa_000000.tar", "sa_000001.tar", "sa_000002.tar"]
    unpacked = tmp_path / "unpacked"
    members = []
    for t in tars:
        with tarfile.open(t) as tar:
            members += tar.getnames()
            tar.extractall(unpacked, filter="data")
    assert len(members) == len(set(members)) == 10  # five images and their JSONs, once each
    entries = read_sa1b(unpacked)
    assert sorted(e.image_path.name for e in entries) == sorted(m for m in members if not m.endswith(".json"))
    index = pq.read_table(out / "index.parquet").to_pylist()
    assert [r["image_id"] for r in index] == list(range(1, 7))
    failed = [r for r in index if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["path"].endswith("corrupt.png") and "cannot read" in failed[0]["error"]
    done = {r["name"]: (r["masks"], r["shard"]) for r in index if r["status"] == "done"}
    assert len(done) == 5 and all(shard.startswith("sa_0000") for _, shard in done.values())
    again = run("engine", photos, "-o", out, "--shards", "2", *GRID)
    assert again.returncode == 1
    index = pq.read_table(out / "index.parquet").to_pylist()
    assert {r["name"]: (r["masks"], r["shard"]) for r in index if r["status"] == "skipped"} == done


@pytest.fixture()
def s3_store(tmp_path):
    """An S3 endpoint on 127.0.0.1 (moto's server), with a bucket `photos`; the environment that
    points boto3, pyarrow and the CLI at it."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is installed in the test venv (make test)")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket="photos")
        yield client, env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def test_inputs_on_s3_give_what_local_inputs_give(photos, s3_store, tmp_path):
    """Photos in an S3 bucket (a folder, a glob, a manifest of s3:// URIs), read by Ray's workers
    through pyarrow's file systems: the data engine's shard, its tar files and embeddings equal
    those made from the same files on disk; an object that is not an image is recorded."""
    import tarfile

    client, env = s3_store
    local = tmp_path / "local_in"
    local.mkdir()
    for name in ("coffee.png", "corrupt.png", "crop.png"):
        shutil.copy(photos / name, local / name)
        client.put_object(Bucket="photos", Key=f"in/{name}", Body=(photos / name).read_bytes())
    client.put_object(Bucket="photos", Key="in/notes.txt", Body=b"not listed: not an image name")
    client.put_object(Bucket="photos", Key="in/sub/chelsea_third.jpg", Body=(photos / "chelsea_third.jpg").read_bytes())

    mine = run("engine", local, "-o", tmp_path / "from_disk", "--shards", "2", "--threads", "1", *GRID)
    assert mine.returncode == 1 and "corrupt.png" in mine.stderr, mine.stderr
    theirs = run("engine", "s3://photos/in", "-o", tmp_path / "from_s3", "--shards", "2", "--engine", "ray",
                 "--threads", "1", *GRID, env=env)
    assert theirs.returncode == 1 and "s3://photos/in/corrupt.png: cannot read" in theirs.stderr, theirs.stderr
    assert "Traceback" not in theirs.stderr
    a, b = _outputs(tmp_path / "from_disk"), _outputs(tmp_path / "from_s3")
    assert sorted(a) == sorted(b) and {"sa_coffee.json", "sa_crop.png", "sa_000000.tar"} <= set(a)
    for name in a:
        if name.endswith(".json"):
            assert a[name] == b[name], name
    with tarfile.open(tmp_path / "from_s3" / "sa_000000.tar") as tar:
        assert tar.extractfile("sa_coffee.png").read() == (photos / "coffee.png").read_bytes()
    import pyarrow.parquet as pq

    index = pq.read_table(tmp_path / "from_s3" / "index.parquet").to_pylist()
    assert [(r["path"], r["status"]) for r in index] == [
        ("s3://photos/in/coffee.png", "done"), ("s3://photos/in/corrupt.png", "failed"), ("s3://photos/in/crop.png", "done")]

    # a glob across folders, then a manifest of URIs: embeddings as from disk
    out = run("embed", "s3://photos/in/**/c*.[jp][pn]g", "-o", tmp_path / "emb", "--quiet", env=env)
    assert out.returncode == 1 and "corrupt.png as an image (not a format Pillow knows)" in out.stderr, out.stderr
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [
        "chelsea_third.safetensors", "coffee.safetensors", "crop.safetensors"]
    (tmp_path / "list.txt").write_text("s3://photos/in/coffee.png\ns3://photos/in/missing.png\n")
    out = run("embed", "--manifest", tmp_path / "list.txt", "-o", tmp_path / "emb2", "--quiet", env=env)
    assert "missing.png" in out.stderr and out.returncode == 1, out.stderr
    from safetensors.numpy import load_file

    ref = run("embed", photos / "coffee.png", "-o", tmp_path / "emb3", "--quiet")
    assert ref.returncode == 0, ref.stderr
    x, y = load_file(tmp_path / "emb2" / "coffee.safetensors"), load_file(tmp_path / "emb3" / "coffee.safetensors")
    assert all(np.array_equal(x[k], y[k]) for k in x)
    # a store that cannot be reached: one line, no traceback
    out = run("embed", "s3://photos/in", "-o", tmp_path / "emb4", env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert out.returncode == 1 and "cannot list s3://photos/in" in out.stderr and "Traceback" not in out.stderr
