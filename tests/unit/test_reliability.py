"""Inputs a careless or hostile user gives the library: any bytes as an upload, any JSON as a
prompt, images and options at the edges, damaged checkpoints, shared CPUs. Each gets a result
or the documented error (ValueError, or an HTTP 4xx), never another exception."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi import HTTPException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from promptseg import MaskGenerator, Predictor, build_model, cpu, default_model, read_image, sample_image_path
from promptseg.engine.batch import output_names, remove_partial_files
from promptseg.io import atomic_path, check_image_shape
from promptseg.server.schemas import SegmentRequest, decode_upload
from promptseg.server.worker import HeavyJob, ModelWorker, Stopped

COFFEE = sample_image_path("coffee.png")
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    pred = Predictor(default_model())
    pred.set_image(np.asarray(Image.open(COFFEE).convert("RGB").resize((96, 64))))
    return pred


@pytest.fixture(scope="module")
def spare_predictor() -> Predictor:
    return Predictor(default_model())


def _small_png() -> bytes:
    buf = io.BytesIO()
    Image.open(COFFEE).convert("RGB").resize((48, 32)).save(buf, format="PNG")
    return buf.getvalue()


SMALL_PNG = _small_png()


def _mutations() -> st.SearchStrategy[bytes]:
    """Real image bytes cut short, with bytes flipped, or with junk appended; and any bytes."""
    def mutate(args):
        cut, flips, tail = args
        data = bytearray(SMALL_PNG[:cut])
        for pos, value in flips:
            if data:
                data[pos % len(data)] = value
        return bytes(data) + tail

    return st.one_of(
        st.binary(max_size=512),
        st.tuples(st.integers(0, len(SMALL_PNG)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                             max_size=8), st.binary(max_size=32)).map(mutate),
    )


@FAST
@given(_mutations())
def test_any_upload_bytes_decode_or_get_a_documented_4xx(data):
    try:
        rgb = decode_upload(data, max_pixels=4_000_000)
    except HTTPException as exc:
        assert exc.status_code in (400, 413, 415, 422) and isinstance(exc.detail, str) and exc.detail
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
FIELDS = ("point_coords", "point_labels", "box", "multimask_output", "mask_format", "refine")


def _request_bodies() -> st.SearchStrategy[dict]:
    points = st.lists(st.tuples(st.floats(-20, 120), st.floats(-20, 80)), max_size=3)
    well_formed = st.fixed_dictionaries({}, optional={
        "point_coords": points.map(lambda ps: [list(p) for p in ps]),
        "point_labels": st.lists(st.sampled_from([0, 1]), max_size=3),
        "box": st.tuples(*[st.floats(-20, 120)] * 4).map(list),
        "multimask_output": st.booleans(),
    })
    anything = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4)
    return st.one_of(well_formed, anything)


@FAST
@given(_request_bodies())
def test_any_prompt_json_is_answered_or_refused_with_a_clear_error(predictor, body):
    try:
        req = SegmentRequest.model_validate(body)
    except ValidationError:
        return  # the server answers these with a 422
    coords = None if req.point_coords is None else np.array(req.point_coords, dtype=np.float64).reshape(-1, 2)
    labels = None if req.point_labels is None else np.array(req.point_labels)
    box = None if req.box is None else np.array(req.box)
    try:
        masks, scores, low_res = predictor.predict(coords, labels, box, multimask_output=req.multimask_output)
    except ValueError as exc:
        assert str(exc)
    else:
        assert masks.shape[1:] == (64, 96) and len(scores) == len(masks) == len(low_res)


ARRAYS = st.tuples(
    st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
    st.sampled_from(["uint8", "uint16", "float32", "float64", "bool", "int64", "complex64", "object"]),
    st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, float("nan")]),
)


@settings(max_examples=60, deadline=None, database=None)
@given(ARRAYS)
def test_any_array_as_an_image_is_embedded_or_refused_with_a_value_error(spare_predictor, spec):
    predictor = spare_predictor
    shape, dtype, value = spec
    arr = np.full(shape, value if dtype not in ("uint8", "uint16", "int64") else abs(np.nan_to_num(value)),
                  dtype=dtype)
    try:
        predictor.set_image(arr)
    except ValueError as exc:
        assert str(exc)
    else:
        h, w = predictor.image_state.original_size
        assert (h, w) == shape[:2]


def test_prompts_at_the_edges_raise_value_errors(predictor):
    with pytest.raises(ValueError, match="no points"):
        predictor.predict(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="multimask_output must be True or False"):
        predictor.predict(np.array([[5, 5]]), np.array([1]), multimask_output="yes")
    with pytest.raises(ValueError, match="return_logits must be True or False"):
        predictor.predict(np.array([[5, 5]]), np.array([1]), return_logits=1)
    with pytest.raises(ValueError, match="no boxes"):
        predictor.predict(box=np.zeros((0, 4)))
    with pytest.raises(ValueError, match="1 .foreground. or 0"):
        predictor.predict(np.array([[5, 5]]), np.array([0.5]))


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1), (2, 1025), (0, 10)])
def test_images_the_model_cannot_take_raise_value_errors(predictor, shape):
    with pytest.raises(ValueError, match="aspect ratio beyond 512:1|empty"):
        predictor.set_image(np.full((*shape, 3), 100, np.uint8))


def test_the_aspect_limit_itself_is_accepted(predictor):
    check_image_shape(2, 1024)
    predictor.set_image(np.full((2, 1024, 3), 100, np.uint8))
    masks, _, _ = predictor.predict(np.array([[500, 1]]), np.array([1]))
    assert masks.shape[1:] == (2, 1024)


def test_bombs_and_truncated_files_raise_value_errors(tmp_path, predictor):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 10000)).save(bomb)  # 200 MP, a few KB
    for source in (bomb, str(bomb)):
        with pytest.raises(ValueError, match="decompression bomb.*MAX_IMAGE_PIXELS"):
            read_image(source)
    with pytest.raises(ValueError, match="decompression bomb"):
        predictor.set_image(bomb)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(COFFEE.read_bytes()[:20000])
    with pytest.raises(ValueError, match="truncated"):
        read_image(truncated)
    with Image.open(truncated) as opened:  # opened by the caller, decoded by us
        with pytest.raises(ValueError, match="truncated"):
            predictor.set_image(opened)


@pytest.mark.parametrize("options, message", [
    ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio"),
    ({"crop_overlap_ratio": -0.1}, "crop_overlap_ratio"),
    ({"points_per_side": 4, "crop_n_layers": 3, "crop_n_points_downscale_factor": 2}, "leaves no clicks"),
    ({"points_per_side": 100_000}, "points_per_side"),
    ({"points_per_side": 0}, "points_per_side"),
    ({"points_per_side": 8.0}, "points_per_side"),
    ({"points_per_batch": 0}, "points_per_batch"),
    ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh"),
    ({"stability_score_thresh": "0.9"}, "stability_score_thresh"),
    ({"stability_score_offset": float("inf")}, "stability_score_offset"),
    ({"box_nms_thresh": 1.5}, "box_nms_thresh"),
    ({"crop_n_layers": 9}, "crop_n_layers"),
    ({"min_mask_region_area": -1}, "min_mask_region_area"),
    ({"points_per_side": None, "point_grids": [np.zeros((0, 2))]}, "point_grids"),
])
def test_generator_options_out_of_range_raise_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        MaskGenerator(default_model(), **options)


def test_generator_counts_its_clicks():
    assert MaskGenerator(default_model(), points_per_side=64, crop_n_layers=2).prompt_count == 86016
    assert MaskGenerator(default_model(), points_per_side=8, crop_n_layers=1,
                         crop_n_points_downscale_factor=2).prompt_count == 64 + 4 * 16


@pytest.fixture(scope="module")
def tiny_state():
    return default_model().state_dict()


def test_half_precision_checkpoints_load_as_fp32(tmp_path, tiny_state, photo):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() for k, v in tiny_state.items()}, path)
    model = build_model(checkpoint=path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    pred = Predictor(model)
    pred.set_image(photo)
    masks, scores, _ = pred.predict(np.array([[290, 150]]), np.array([1]))
    assert masks.any() and np.isfinite(scores).all()


def test_integer_and_non_finite_weights_are_refused(tmp_path, tiny_state):
    ints = tmp_path / "int.pth"
    torch.save({k: v.to(torch.int32) for k, v in tiny_state.items()}, ints)
    with pytest.raises(ValueError, match="torch.int32 where floating point is needed"):
        build_model(checkpoint=ints)
    name = next(iter(tiny_state))
    nan = tmp_path / "nan.pth"
    torch.save({k: v.clone().fill_(float("nan")) if k == name else v for k, v in tiny_state.items()}, nan)
    with pytest.raises(ValueError, match=f"NaN or infinite values in {name}"):
        build_model(checkpoint=nan)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo ran",))


@pytest.mark.parametrize("legacy", [False, True])
def test_refused_pickles_never_suggest_unpickling(tmp_path, legacy):
    path = tmp_path / "objects.pth"
    torch.save({"weights": torch.zeros(2), "payload": _Payload()}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError) as info:
        build_model(checkpoint=path)
    text = str(info.value)
    assert "weights_only" not in text and "will likely succeed" not in text and "GLOBAL" in text


def test_threads_follow_affinity_cgroup_quota_and_the_user(tmp_path, monkeypatch):
    (tmp_path / "proc").write_text("0::/job/worker\n")
    (tmp_path / "job" / "worker").mkdir(parents=True)
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs for the parent
    (tmp_path / "job" / "worker" / "cpu.max").write_text("max 100000\n")
    assert cpu._cgroup_cpu_limit(tmp_path, tmp_path / "proc") == 1.5
    monkeypatch.setattr(cpu, "_cgroup_cpu_limit", lambda: 1.5)
    assert cpu.usable_cpus() == 1
    monkeypatch.setattr(cpu, "_cgroup_cpu_limit", lambda: None)
    assert cpu.usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(cpu.THREADS_ENV, "3")
    assert cpu.choose_threads() == 3 and cpu.choose_threads(1) == 1
    monkeypatch.setenv(cpu.THREADS_ENV, "many")
    with pytest.raises(ValueError, match="PROMPTSEG_THREADS"):
        cpu.choose_threads()
    with pytest.raises(ValueError, match="1 or more"):
        cpu.choose_threads(0)


def test_threads_of_a_process_pinned_to_one_cpu():
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); import torch; "
            "from promptseg import Predictor, default_model; Predictor(default_model()); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != cpu.THREADS_ENV})
    assert out.stdout.strip() == "1", out.stderr


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "A", "a/b", "b/a", "x y"]),
                          st.sampled_from(["photo", "Photo", "a_photo", "photo_png"]),
                          st.sampled_from([".png", ".jpg", ".PNG", ".jpeg"])), max_size=12, unique=True))
def test_output_names_never_collide(tmp_path_factory, files):
    root = Path("/data")
    paths = [root / folder / f"{stem}{ext}" for folder, stem, ext in files]
    names = output_names(paths)
    assert len({n.casefold() for n in names}) == len(paths)
    assert output_names(paths) == names  # the same inputs, the same names: a re-run finds its outputs


def test_partial_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    done = tmp_path / "done.json"
    done.write_text("{}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / "sub" / f".photo.json.{dead_pid}.abcd1234.partial"
    old_style = tmp_path / ".photo.json.k2j3h4g5.json"
    stale.parent.mkdir()
    stale.write_text("{")
    old_style.write_text("{")
    with atomic_path(tmp_path / "live.json") as live:  # this process's own, being written
        live.write_text("{")
        removed = remove_partial_files(tmp_path)
        assert live.exists()
    assert sorted(removed) == sorted([stale, old_style])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["done.json", "live.json"]


def test_worker_answers_interactive_work_between_heavy_steps_and_stops_heavy_work():
    import asyncio

    worker = ModelWorker()
    log = []

    def heavy(step):
        for _ in range(50):
            step()
            log.append("heavy")
            time.sleep(0.01)
        return "heavy done"

    async def scenario():
        job = HeavyJob(seconds=60)
        task = asyncio.ensure_future(worker.run_heavy(heavy, job))
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        assert await worker.run(lambda: log.append("click") or "click") == "click"
        waited = time.perf_counter() - t0
        assert await task == "heavy done"
        stopped = HeavyJob(seconds=60)
        running = asyncio.ensure_future(worker.run_heavy(heavy, stopped))
        await asyncio.sleep(0.05)
        stopped.cancel.set()
        with pytest.raises(Stopped, match="client went away"):
            await running
        with pytest.raises(Stopped, match="time budget of 0.05 s"):
            await worker.run_heavy(heavy, HeavyJob(seconds=0.05))
        return waited

    waited = asyncio.run(scenario())
    worker.close()
    assert 0 < log.index("click") < 50 and waited < 0.1  # answered between two steps, not after the job


@pytest.mark.parametrize("env, first, expected", [
    ({}, "promptseg", "10000"),  # set on import, before torch loads libgomp
    ({"GOMP_SPINCOUNT": "5"}, "promptseg", "5"),  # the user's value is kept
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "promptseg", None),  # so is the user's wait policy
    ({"PROMPTSEG_NO_SPIN_TUNING": "1"}, "promptseg", None),
    ({}, "torch", None),  # too late once torch is loaded: nothing is pretended
])
def test_openmp_spin_count_is_set_only_where_it_acts(env, first, expected):
    code = (f"import {first}, os, promptseg, torch; print(os.environ.get('GOMP_SPINCOUNT'));"
            "print(torch.__config__.parallel_info().count('OpenMP') > 0)")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "PROMPTSEG_NO_SPIN_TUNING")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    spin, openmp = out.stdout.split()
    assert spin == str(expected) and openmp == "True"
