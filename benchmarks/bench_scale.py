"""Throughput of a job over many photos: the local engine against Ray Data with 1 and 2 workers,
on this machine, the same photos and model (everything mode, the default model), each run into
its own empty folder, in turn. Images per minute, and Ray's cost per image over the local engine.

    .venv/bin/python benchmarks/bench_scale.py [--images 100] [--grid 16] [--photos DIR] [--json out.json]
    .venv/bin/python benchmarks/bench_scale.py --plot out.json -o docs/scale_throughput.png   # its picture
    .venv/bin/python benchmarks/bench_scale.py --cost tiny,vit_b,sam2.1_hiera_t   # seconds an image, per model

`--cost`: one everything-mode job per model type (SAM's defaults: 32x32 grid; thresholds 0, so
every candidate goes through the whole pipeline as the confident masks of real weights would)
on one 2250x1500 photo (SA-1B's usual size), after a warm-up: the CPU seconds of an image, for
the cost model in docs/scale.md. Models without weights here run on random ones.

Photos: the first N image files under DIR (default: ../shared/eval-data, where present; else
the bundled samples resized and repeated), used for timing only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import Machine  # noqa: E402

from promptseg import sample_image_path  # noqa: E402
from promptseg.engine.jobs import JobSpec  # noqa: E402
from promptseg.engine.run import RayOptions, run_job  # noqa: E402
from promptseg.io import IMAGE_SUFFIXES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _photos(folder: Path | None, n: int, scratch: Path) -> list[Path]:
    if folder is not None and folder.is_dir():
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "mask" not in str(p))
        if len(found) >= n:
            step = len(found) / n
            return [found[int(i * step)] for i in range(n)]
    from PIL import Image

    out = []
    for i in range(n):
        img = Image.open(sample_image_path(("coffee.png", "chelsea.png")[i % 2])).convert("RGB")
        path = scratch / f"photo{i:04d}.jpg"
        img.rotate(i % 4 * 90, expand=True).save(path, quality=90)
        out.append(path)
    return out


def plot(results: Path, target: Path) -> None:
    """Images per minute of each engine configuration, from a --json file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(results.read_text())
    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=120)
    bars = ax.barh([r["config"] for r in rows][::-1], [r["images_per_minute"] for r in rows][::-1],
                   color=["#4c72b0", "#dd8452", "#55a868"][: len(rows)][::-1])
    for bar, r in zip(bars, rows[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['images_per_minute']:.0f} ({r['ratio']:.2f}x)",
                va="center")
    ax.set_xlabel("images per minute (everything mode, default model, 2-core CPU)")
    ax.set_xlim(0, max(r["images_per_minute"] for r in rows) * 1.3)
    ax.set_title(f"{doc['args']['images']} photos: local engine vs Ray Data workers", fontsize=10)
    fig.tight_layout()
    fig.savefig(target)


def cost(models: list[str], grid: int) -> list[dict]:
    """Seconds an image (embedding, then everything mode) for each model type, on this machine."""
    import numpy as np
    import torch
    from PIL import Image

    from promptseg import MaskGenerator, Predictor, build_model, load_model

    photo = np.asarray(Image.open(sample_image_path("coffee.png")).convert("RGB").resize((2250, 1500), Image.BICUBIC))
    rows = []
    for name in models:
        try:
            sam = load_model(name)
        except (FileNotFoundError, ValueError):
            torch.manual_seed(0)
            sam = build_model(name)  # random weights: the same work
        predictor = Predictor(sam)
        generator = MaskGenerator(predictor, points_per_side=grid, pred_iou_thresh=0.0, stability_score_thresh=0.0)
        predictor.set_image(photo)  # warm-up
        t0 = time.perf_counter()
        predictor.set_image(photo)
        embed = time.perf_counter() - t0
        state = predictor.image_state
        t0 = time.perf_counter()
        masks = len(generator.generate(photo, image_state=state))
        rest = time.perf_counter() - t0
        rows.append({"model": name, "embed_s": embed, "generator_s": rest, "image_s": embed + rest, "masks": masks})
        print(f"  {name:18s} embedding {embed:6.2f} s + everything {rest:6.2f} s = {embed + rest:6.2f} s an image "
              f"({masks} masks)", flush=True)
        del sam, predictor, generator
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plot", type=Path, help="draw the picture of a --json file instead of measuring")
    ap.add_argument("-o", "--output", type=Path, default=Path("scale_throughput.png"), help="the picture (--plot)")
    ap.add_argument("--cost", help="comma-separated model types: seconds an image for each (see above)")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--grid", type=int, default=16, help="points per side of everything mode")
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "eval-data")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cost:
        machine = Machine.start()
        rows = cost(args.cost.split(","), args.grid)
        summary = machine.stop()
        print(machine.line())
        if args.json:
            args.json.write_text(json.dumps({"cost": rows, "machine": summary, "args": vars(args)}, indent=2, default=str))
        return
    if args.plot:
        plot(args.plot, args.output)
        return
    rows = []
    machine = Machine.start()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        photos = _photos(args.photos, args.images, scratch)
        print(f"{len(photos)} photos, everything mode on the default model, {args.grid}x{args.grid} grid", flush=True)
        configs = [
            ("local (2 threads)", "local", None),
            ("Ray, 1 worker x 2 CPUs", "ray", RayOptions(workers=(1, 1), cpus_per_worker=2, batch_size=4, num_cpus=2)),
            ("Ray, 2 workers x 1 CPU", "ray", RayOptions(workers=(2, 2), cpus_per_worker=1, batch_size=4, num_cpus=2)),
        ]
        for label, engine, ray in configs:
            out = scratch / label.replace(" ", "_").replace(",", "")
            spec = JobSpec("everything", str(out), overlays=False, generator={"points_per_side": args.grid})
            started = time.perf_counter()
            summary = run_job(spec, photos, engine, ray, quiet=True)
            seconds = time.perf_counter() - started
            per_image = [r.seconds for r in summary.results if r.status == "done"]
            rows.append({"config": label, "seconds": seconds, "images": summary.done, "failed": len(summary.failures),
                         "masks": summary.masks, "images_per_minute": summary.done / seconds * 60,
                         "median_image_seconds": statistics.median(per_image) if per_image else None})
            print(f"  {label:24s} {seconds:7.1f} s  {rows[-1]['images_per_minute']:6.1f} img/min  "
                  f"({summary.done} images, {summary.masks} masks, median {rows[-1]['median_image_seconds']:.2f} s "
                  "an image in its worker)", flush=True)
    local = rows[0]
    print("\n| engine | images / min | x local | seconds (whole job, Ray start included) |")
    print("|---|---|---|---|")
    for r in rows:
        r["ratio"] = r["images_per_minute"] / local["images_per_minute"]
        r["overhead_s_per_image"] = (r["seconds"] - local["seconds"]) / max(1, r["images"])
        print(f"| {r['config']} | {r['images_per_minute']:.1f} | {r['ratio']:.2f} | {r['seconds']:.1f} |")
    for r in rows[1:]:
        print(f"{r['config']}: {r['overhead_s_per_image'] * 1000:+.0f} ms per image against the local engine")
    summary = machine.stop()
    print(machine.line())
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": summary, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()
