"""Speed of SAM 2.1 (each size) and of SAM 1 ViT-B beside it: promptseg vs Meta's packages (sam2
1.1.0, segment-anything 1.0), in one process, on the same random weights and the same photo,
interleaved. Image embedding, one click to a full-size mask, and the automatic mask generator
after the embedding (every candidate through the whole pipeline: thresholds 0). Medians, ratios.

    .venv/bin/python benchmarks/bench_sam2.py [--sizes t,s,b+,l,vit_b] [--repeat 3] [--clicks 20]
    .venv/bin/python benchmarks/bench_sam2.py --memory [--sizes t,l] [--memory-size 2000x1500]

`--memory`: peak memory (RSS) of each side in a fresh process that builds the model, embeds a
large photo and runs the generator on it (8x8 grid, thresholds 0), the reference first.
"""

from __future__ import annotations

# first, before torch: promptseg's OpenMP setting (promptseg.cpu.tune_openmp) then holds for the whole
# process, the reference included
import promptseg  # noqa: F401

# isort: split
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import Machine, spread  # noqa: E402

from helpers import randomize_  # noqa: E402
from promptseg import Predictor, build_model, read_image, sample_image_path  # noqa: E402
from promptseg.cpu import tune_allocator  # noqa: E402
from promptseg.everything import MaskGenerator  # noqa: E402

GENERATOR = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


def _pair(size: str, folder: Path):
    """(reference predictor, reference generator class, our predictor, name) on shared weights."""
    if size == "vit_b":
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

        ref = randomize_(sam_model_registry["vit_b"](), seed=1).eval()
        path = folder / "vit_b.pth"
        torch.save(ref.state_dict(), path)
        return SamPredictor(ref), SamAutomaticMaskGenerator, Predictor(build_model(checkpoint=path)), "SAM ViT-B"
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    config = f"configs/sam2.1/sam2.1_hiera_{size}.yaml"
    path = folder / f"sam2.1_hiera_{size}.pt"
    torch.save({"model": randomize_(build_sam2(config, None, device="cpu"), seed=2).state_dict()}, path)
    ref = SAM2ImagePredictor(build_sam2(config, str(path), device="cpu"))
    return ref, SAM2AutomaticMaskGenerator, Predictor(build_model(checkpoint=path)), f"SAM 2.1 Hiera-{size.upper()}"


def _reference_generator_after_embedding(ref_predictor, generator_cls, image, grid: int):
    """The reference generator on an image its predictor has already embedded: its own
    `set_image` is made to restore that embedding instead of computing it again."""
    generator = generator_cls(ref_predictor.model, points_per_side=grid, **GENERATOR)
    inner = generator.predictor
    ref_predictor.set_image(image)
    saved = dict(ref_predictor.__dict__)
    keep = {k: v for k, v in saved.items() if k != "model"}

    def restore(_image, *args, **kwargs):
        inner.__dict__.update(keep)

    inner.set_image = restore
    return generator


def _peak_memory_child(side: str, size: str, photo_size: str) -> None:
    """One side's embedding and generator on a large photo; prints the peak RSS in GiB."""
    w, h = (int(v) for v in photo_size.split("x"))
    image = np.asarray(Image.fromarray(read_image(sample_image_path("coffee.png"))).resize((w, h), Image.BICUBIC))
    options = dict(points_per_side=8, **GENERATOR)
    with torch.inference_mode():
        if side == "ours":
            model = build_model("sam2.1_hiera_" + size if size != "vit_b" else "vit_b")
            MaskGenerator(Predictor(model), **options).generate(image)
        elif size == "vit_b":
            from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

            SamAutomaticMaskGenerator(sam_model_registry["vit_b"]().eval(), **options).generate(image)
        else:
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
            from sam2.build_sam import build_sam2

            model = build_sam2(f"configs/sam2.1/sam2.1_hiera_{size}.yaml", None, device="cpu")
            SAM2AutomaticMaskGenerator(model, **options).generate(image)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def _peak_memory(args) -> None:
    machine = Machine.start()
    rows = []
    for size in args.sizes.split(","):
        peak = {}
        for side in ("reference", "ours"):
            out = subprocess.run([sys.executable, __file__, "--_child", side, "--sizes", size, "--memory-size",
                                  args.memory_size], capture_output=True, text=True, check=True)
            peak[side] = float(out.stdout.strip().splitlines()[-1])
        rows.append({"model": size, "peak_gib": peak})
        print(f"{size}: {args.memory_size} photo, generator 8x8, thresholds 0: peak memory ours {peak['ours']:.2f} GiB, "
              f"reference {peak['reference']:.2f} GiB ({peak['reference'] / peak['ours']:.2f}x less)", flush=True)
    summary = machine.stop()
    print(machine.line())
    if args.json:
        args.json.write_text(json.dumps({"machine": summary, "memory": rows, "args": vars(args)}, indent=2, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="t,s,b+,l,vit_b")
    ap.add_argument("--repeat", type=int, default=3, help="embeddings and generator runs per implementation")
    ap.add_argument("--clicks", type=int, default=20, help="one-click runs per implementation")
    ap.add_argument("--size", default="1500x1000", help="WxH of the photo for embedding and clicks")
    ap.add_argument("--grid", type=int, default=16, help="generator grid (points per side)")
    ap.add_argument("--generator-size", default="512x384", help="WxH of the photo for the generator")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--memory", action="store_true", help="peak memory of each side instead of speed")
    ap.add_argument("--memory-size", default="2000x1500", help="WxH of the photo for --memory")
    ap.add_argument("--_child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        _peak_memory_child(args._child, args.sizes, args.memory_size)
        return
    if args.memory:
        _peak_memory(args)
        return
    tune_allocator()  # the whole process: the references get it too

    photo = read_image(sample_image_path("coffee.png"))
    w, h = (int(v) for v in args.size.split("x"))
    image = np.asarray(Image.fromarray(photo).resize((w, h), Image.BICUBIC))
    gw, gh = (int(v) for v in args.generator_size.split("x"))
    small = np.asarray(Image.fromarray(photo).resize((gw, gh), Image.BICUBIC))
    rng = np.random.default_rng(0)
    clicks = [np.array([[rng.uniform(0, w), rng.uniform(0, h)]]) for _ in range(args.clicks)]
    print(f"{w}x{h} photo (generator: {gw}x{gh}, {args.grid}x{args.grid} grid, thresholds 0), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    machine = Machine.start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for size in args.sizes.split(","):
            ref, generator_cls, ours, name = _pair(size, Path(tmp))
            times = {k: {"ours": [], "reference": []} for k in ("embed", "click", "generator")}
            preds = {"ours": ours, "reference": ref}
            for pred in preds.values():  # warm-up
                pred.set_image(image)
                pred.predict(point_coords=clicks[0], point_labels=np.array([1]))
            for _ in range(args.repeat):
                for side, pred in preds.items():
                    t0 = time.perf_counter()
                    pred.set_image(image)
                    times["embed"][side].append(time.perf_counter() - t0)
            for click in clicks:
                for side, pred in preds.items():
                    t0 = time.perf_counter()
                    pred.predict(point_coords=click, point_labels=np.array([1]))
                    times["click"][side].append(time.perf_counter() - t0)
            ref_gen = _reference_generator_after_embedding(ref, generator_cls, small, args.grid)
            ours.set_image(small)
            state = ours.image_state
            our_gen = MaskGenerator(ours, points_per_side=args.grid, **GENERATOR)
            counts = {}
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                counts["reference"] = len(ref_gen.generate(small))
                times["generator"]["reference"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                counts["ours"] = len(our_gen.generate(small, image_state=state))
                times["generator"]["ours"].append(time.perf_counter() - t0)
            row = {"model": name, "masks": counts}
            for k, v in times.items():
                scale = 1000 if k == "click" else 1
                row[k] = {side: [t * scale for t in runs] for side, runs in v.items()}
                row[f"{k}_ratio"] = statistics.median(v["reference"]) / statistics.median(v["ours"])
            rows.append(row)
            print(f"{name}: embedding ours {spread(row['embed']['ours'])} s, reference "
                  f"{spread(row['embed']['reference'])} s ({row['embed_ratio']:.2f}x); one click ours "
                  f"{spread(row['click']['ours'])} ms, reference {spread(row['click']['reference'])} ms "
                  f"({row['click_ratio']:.2f}x); generator ours {spread(row['generator']['ours'])} s, reference "
                  f"{spread(row['generator']['reference'])} s ({row['generator_ratio']:.2f}x; masks {counts})",
                  flush=True)
            del ref, ours, ref_gen, our_gen
    summary = machine.stop()
    print("\n| model | embedding ours / ref (s) | x | one click ours / ref (ms) | x | generator ours / ref (s) | x |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        def med(k, side, r=r):
            return statistics.median(r[k][side])

        print(f"| {r['model']} | {med('embed', 'ours'):.2f} / {med('embed', 'reference'):.2f} | {r['embed_ratio']:.2f} "
              f"| {med('click', 'ours'):.0f} / {med('click', 'reference'):.0f} | {r['click_ratio']:.2f} "
              f"| {med('generator', 'ours'):.1f} / {med('generator', 'reference'):.1f} | {r['generator_ratio']:.2f} |")
    print(machine.line())
    if args.json:
        args.json.write_text(json.dumps({"machine": summary, "rows": rows, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()
