"""Everything mode: promptseg's MaskGenerator vs the reference SamAutomaticMaskGenerator in one
process, on the same random weights and the same photo. Reports end-to-end time, the time after
the image embedding (decoder + postprocessing), mask counts and peak memory.

    .venv/bin/python benchmarks/bench_everything.py [--model vit_b] [--grid 16] [--size 512x384] [--repeat 3]
    .venv/bin/python benchmarks/bench_everything.py --memory --size 4000x3000   # peak memory only

Random weights make masks that fill the image, so with the default thresholds few survive; the
thresholds-at-0 run is the one where every mask goes through the whole pipeline. Runs are
interleaved (ours, reference, ours, ...) and reported as median (min-max), with the machine's
condition before and after (benchmarks/calibration.py).
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
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import Machine, spread  # noqa: E402

from helpers import randomize_  # noqa: E402
from promptseg import MaskGenerator, read_image, sample_image_path  # noqa: E402
from promptseg.cpu import tune_allocator  # noqa: E402
from promptseg.model import get_config  # noqa: E402

SETTINGS = {
    "thresholds at 0": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0),
    "defaults": {},
}


def _image(size: str) -> np.ndarray:
    w, h = (int(v) for v in size.split("x"))
    return np.asarray(Image.fromarray(read_image(sample_image_path("coffee.png"))).resize((w, h), Image.BICUBIC))


def _models(model: str):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    ref = randomize_(sam_model_registry[model](), seed=1).eval()
    ours = get_config(model).build().eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


class _Timed:
    """Wraps a predictor's set_image to time the embedding apart from the rest."""

    def __init__(self, predictor) -> None:
        self.seconds = 0.0
        original = predictor.set_image

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            self.seconds += time.perf_counter() - t0
            return out

        predictor.set_image = timed


def run_speed(args) -> dict:
    from segment_anything import SamAutomaticMaskGenerator

    tune_allocator()
    image = _image(args.size)
    ref_model, ours_model = _models(args.model)
    print(f"{args.model}, {args.grid}x{args.grid} grid, {args.size} photo, {torch.get_num_threads()} threads, "
          f"{args.repeat} interleaved runs each")
    machine = Machine.start()
    makers = {
        "ours": lambda o: MaskGenerator(ours_model, points_per_side=args.grid, **o),
        "reference": lambda o: SamAutomaticMaskGenerator(ref_model, points_per_side=args.grid, **o),
    }
    results: dict = {"model": args.model, "grid": args.grid, "size": args.size}
    for label, options in SETTINGS.items():
        runs: dict[str, list[dict]] = {name: [] for name in makers}
        for _ in range(args.repeat):
            for name, make in makers.items():
                gen = make(options)
                timer = _Timed(gen.predictor)
                t0 = time.perf_counter()
                with torch.no_grad():
                    masks = gen.generate(image)
                total = time.perf_counter() - t0
                runs[name].append({"total_s": total, "embed_s": timer.seconds,
                                   "after_embed_s": total - timer.seconds, "masks": len(masks)})
        row = {}
        for name, got in runs.items():
            after = [r["after_embed_s"] for r in got]
            total = [r["total_s"] for r in got]
            row[name] = {"total_s": statistics.median(total), "after_embed_s": statistics.median(after),
                         "embed_s": statistics.median(r["embed_s"] for r in got), "masks": got[0]["masks"], "runs": got}
            print(f"  {label:16s} {name:9s} total {spread(total)} s  after the embedding {spread(after)} s  "
                  f"masks {got[0]['masks']}", flush=True)
        row["speedup_total"] = row["reference"]["total_s"] / row["ours"]["total_s"]
        row["speedup_after_embed"] = row["reference"]["after_embed_s"] / row["ours"]["after_embed_s"]
        print(
            f"  {label:16s} speed-up: end to end {row['speedup_total']:.2f}x, after the embedding {row['speedup_after_embed']:.2f}x"
        )
        results[label] = row
    results["machine"] = machine.stop()
    print(f"  {machine.line()}")
    return results


def _peak_child(which: str, args) -> float:
    """Peak RSS (GiB) of a fresh process running one implementation once."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--_child",
            which,
            "--model",
            args.model,
            "--grid",
            str(args.grid),
            "--size",
            args.size,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of each implementation")
    ap.add_argument("--memory", action="store_true", help="measure peak memory of each side in its own process")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--_child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        from segment_anything import SamAutomaticMaskGenerator

        image = _image(args.size)
        ref_model, ours_model = _models(args.model)
        model = ours_model if args._child == "ours" else ref_model
        del ref_model, ours_model
        cls = MaskGenerator if args._child == "ours" else SamAutomaticMaskGenerator
        with torch.no_grad():
            cls(model, points_per_side=args.grid, pred_iou_thresh=0.0, stability_score_thresh=0.0).generate(image)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        return
    if args.memory:
        machine = Machine.start()
        ours, ref = _peak_child("ours", args), _peak_child("reference", args)
        print(f"{args.model}, {args.size}, thresholds at 0: peak memory ours {ours:.2f} GiB, reference {ref:.2f} GiB")
        results = {"peak_gib": {"ours": ours, "reference": ref}, "machine": machine.stop()}
    else:
        results = run_speed(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
