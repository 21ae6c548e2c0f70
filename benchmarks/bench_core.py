"""Speed of the image encoder and of one prompt: promptseg vs the reference (segment-anything
1.0), in one process, on the same random weights and the same image. Prints medians and ratios.

    .venv/bin/python benchmarks/bench_core.py [--model vit_b] [--repeat 3] [--prompts 20]
"""

from __future__ import annotations

# first, before torch: promptseg's OpenMP setting (promptseg.cpu.tune_openmp) then holds for the whole
# process, the reference included
import promptseg  # noqa: F401

# isort: split
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import Machine, linear_gflops, spread  # noqa: E402

from helpers import randomize_  # noqa: E402
from promptseg import Predictor, build_model, read_image, sample_image_path  # noqa: E402
from promptseg.cpu import tune_allocator  # noqa: E402

# The image encoder's arithmetic, multiply-adds counted twice, as the reference runs it on a
# 1024x1024 input (window padding included): the yardstick of the fp32 limit.
ENCODER_GFLOP = {"vit_b": 972}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--repeat", type=int, default=5, help="encoder runs per implementation")
    ap.add_argument("--prompts", type=int, default=40, help="prompt runs per implementation")
    ap.add_argument("--size", default="1500x1000", help="WxH of the test image (a bundled photo resized)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator settings alone (both sides)")
    args = ap.parse_args()

    if args.default_malloc:
        os.environ["PROMPTSEG_NO_MALLOC_TUNING"] = "1"
    else:
        tune_allocator()  # applies to the whole process: the reference gets it too
    from segment_anything import SamPredictor, sam_model_registry

    w, h = (int(v) for v in args.size.split("x"))
    image = np.asarray(Image.fromarray(read_image(sample_image_path("coffee.png"))).resize((w, h), Image.BICUBIC))
    torch.manual_seed(0)
    ref_model = randomize_(sam_model_registry[args.model](), seed=1).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "random.pth"
        torch.save(ref_model.state_dict(), ckpt)
        ours_model = build_model(checkpoint=ckpt)
    ref, ours = SamPredictor(ref_model), Predictor(ours_model)
    print(f"{args.model}, {w}x{h} image, {torch.get_num_threads()} threads, torch {torch.__version__}")

    rng = np.random.default_rng(0)
    clicks = [np.array([[rng.uniform(0, w), rng.uniform(0, h)]]) for _ in range(args.prompts)]
    label = np.array([1])
    preds = {"ours": ours, "reference": ref}
    times: dict[str, dict[str, list[float]]] = {n: {"encoder": [], "prompt": []} for n in preds}
    machine = Machine.start()
    with torch.no_grad():
        for pred in preds.values():  # warm-up, and the image stays set for the prompt runs
            pred.set_image(image)
            pred.predict(point_coords=clicks[0], point_labels=label)
        # Interleaved, so drift in the machine's speed falls on both sides alike.
        for _ in range(args.repeat):
            for name, pred in preds.items():
                t0 = time.perf_counter()
                pred.set_image(image)
                times[name]["encoder"].append(time.perf_counter() - t0)
        for click in clicks:
            for name, pred in preds.items():
                t0 = time.perf_counter()
                pred.predict(point_coords=click, point_labels=label)
                times[name]["prompt"].append(time.perf_counter() - t0)
    results = {"machine": machine.stop(), "model": args.model, "size": args.size}
    for name in preds:
        enc = statistics.median(times[name]["encoder"])
        prm = statistics.median(times[name]["prompt"])
        results[name] = {"encoder_s": enc, "prompt_ms": prm * 1000, "encoder_runs_s": times[name]["encoder"],
                         "prompt_runs_ms": [t * 1000 for t in times[name]["prompt"]]}
        print(f"  {name:10s} image encoder {spread(times[name]['encoder'])} s   "
              f"one prompt {spread([t * 1000 for t in times[name]['prompt']])} ms   (median (min-max))", flush=True)
    ratio_enc = results["reference"]["encoder_s"] / results["ours"]["encoder_s"]
    ratio_prm = results["reference"]["prompt_ms"] / results["ours"]["prompt_ms"]
    results["speedup"] = {"encoder": ratio_enc, "prompt": ratio_prm}
    print(f"  speed-up   image encoder {ratio_enc:5.2f}x      one prompt {ratio_prm:5.2f}x")
    if args.model in ENCODER_GFLOP and args.size == "1500x1000":
        # the encoder's share of this CPU's fp32 limit: its arithmetic at the calibration
        # matmul's rate (the faster of before and after), over its measured time
        rate = max(machine.before.matmul_gflops, machine.after.matmul_gflops)
        limit = ENCODER_GFLOP[args.model] / rate
        results["encoder_fraction_of_limit"] = {n: limit / results[n]["encoder_s"] for n in preds}
        print(f"  image encoder at the fp32 limit ({ENCODER_GFLOP[args.model]} GFLOP at {rate:.0f} GFLOP/s = "
              f"{limit:.2f} s): ours {100 * limit / results['ours']['encoder_s']:.0f} %, "
              f"reference {100 * limit / results['reference']['encoder_s']:.0f} %")
        # The square matmul can run faster than any product the encoder has (on AVX-512 hosts
        # by ~20 %): the rate of its MLP's product shape (a band of 1024 tokens, 768 -> 3072)
        # says how much of the gap is the host's.
        own = linear_gflops(1024, 768, 3072)
        results["encoder_product_gflops"] = own
        results["encoder_fraction_at_product_rate"] = {n: ENCODER_GFLOP[args.model] / own / results[n]["encoder_s"]
                                                       for n in preds}
        print(f"  the encoder's MLP product shape (1024x768 by 768x3072, F.linear) runs at {own:.0f} GFLOP/s here: "
              f"at that rate ours is at {100 * results['encoder_fraction_at_product_rate']['ours']:.0f} %, the reference "
              f"at {100 * results['encoder_fraction_at_product_rate']['reference']:.0f} %")
    print(f"  {machine.line()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
