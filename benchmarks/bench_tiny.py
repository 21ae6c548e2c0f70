"""Speed of the default `tiny` model on this machine, beside the reference ViT-B in the same run:
image encoder per image, one prompt (also with the optional GrabCut and zoom refinements and the
mirror-image averaging, --flip, which have no counterpart in the reference), and everything mode
end to end on a 1500x1000 photo.

    .venv/bin/python benchmarks/bench_tiny.py [--repeat 10] [--everything-repeat 3] [--json out.json]

The reference (segment-anything 1.0, ViT-B with random weights: the speed does not depend on
the weights) is what a user would otherwise run; its everything mode takes minutes, so it is
measured only with --reference-everything.
"""

from __future__ import annotations

# first, before torch: promptseg's OpenMP setting (promptseg.cpu.tune_openmp) then holds for the whole
# process, the reference included
import promptseg  # noqa: F401

# isort: split
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from calibration import Machine
from PIL import Image

from promptseg import MaskGenerator, Predictor, build_model, read_image, sample_image_path
from promptseg.checkpoints import default_checkpoint
from promptseg.cpu import tune_allocator
from promptseg.predict.flip import FlipPredictor
from promptseg.refine import refine_mask


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--everything-repeat", type=int, default=3)
    ap.add_argument("--reference-everything", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tune_allocator()
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

    photo = read_image(sample_image_path("chelsea.png"))
    image = np.asarray(Image.fromarray(photo).resize((1500, 1000), Image.BICUBIC))
    tiny = build_model(checkpoint=default_checkpoint())
    torch.manual_seed(0)
    ref = sam_model_registry["vit_b"]().eval()
    ours, theirs = Predictor(tiny), SamPredictor(ref)
    print(f"1500x1000 image, {torch.get_num_threads()} threads, torch {torch.__version__}", file=sys.stderr)

    machine = Machine.start()
    ours.set_image(image)  # warm-up
    enc_ours = timed(lambda: ours.set_image(image), args.repeat)
    theirs.set_image(image)
    enc_ref = timed(lambda: theirs.set_image(image), max(2, args.repeat // 5))
    click = np.array([[700.0, 450.0]])
    label = np.array([1])
    ours.predict(click, label)
    prompt_ours = timed(lambda: ours.predict(click, label), 30)
    theirs.predict(click, label)
    prompt_ref = timed(lambda: theirs.predict(click, label), 30)

    def refined_click():
        logits, scores, _ = ours.predict(click, label, return_logits=True)
        refine_mask("grabcut", image, logits[int(np.argmax(scores))], click, label)

    prompt_refined = timed(refined_click, max(3, args.repeat))
    small_box = np.array([600.0, 350.0, 800.0, 550.0])  # 200 px: the zoom embeds a 300 px crop

    def zoomed_box():
        logits, _, _ = ours.predict(box=small_box, multimask_output=False, return_logits=True)
        refine_mask("zoom", image, logits[0], box=small_box, predictor=ours)

    prompt_zoomed = timed(zoomed_box, max(3, args.repeat))
    flip = FlipPredictor(Predictor(tiny))
    flip.set_image(image)
    enc_flip = timed(lambda: flip.set_image(image), args.repeat)
    flip.predict(click, label)
    prompt_flip = timed(lambda: flip.predict(click, label), 30)
    gen = MaskGenerator(tiny)
    counts = []
    everything = timed(lambda: counts.append(len(gen.generate(image))), args.everything_repeat)
    result = {
        "ours_tiny": {
            "encoder_ms": 1000 * statistics.median(enc_ours),
            "prompt_ms": 1000 * statistics.median(prompt_ours),
            "prompt_refined_ms": 1000 * statistics.median(prompt_refined),
            "prompt_zoomed_ms": 1000 * statistics.median(prompt_zoomed),
            "encoder_flip_ms": 1000 * statistics.median(enc_flip),
            "prompt_flip_ms": 1000 * statistics.median(prompt_flip),
            "everything_s": statistics.median(everything),
            "everything_masks": counts[-1],
        },
        "reference_vit_b": {
            "encoder_ms": 1000 * statistics.median(enc_ref),
            "prompt_ms": 1000 * statistics.median(prompt_ref),
        },
    }
    if args.reference_everything:
        ref_gen = SamAutomaticMaskGenerator(ref)
        result["reference_vit_b"]["everything_s"] = statistics.median(timed(lambda: ref_gen.generate(image), 1))
    o, r = result["ours_tiny"], result["reference_vit_b"]
    print(f"image embedding (set_image): tiny {o['encoder_ms']:.0f} ms, reference ViT-B {r['encoder_ms']:.0f} ms "
          f"({r['encoder_ms'] / o['encoder_ms']:.0f}x)")
    print(f"one click: tiny {o['prompt_ms']:.1f} ms, reference ViT-B {r['prompt_ms']:.1f} ms "
          f"({r['prompt_ms'] / o['prompt_ms']:.1f}x)")
    print(f"one click with --refine grabcut: tiny {o['prompt_refined_ms']:.0f} ms "
          f"({o['prompt_refined_ms'] / r['prompt_ms']:.1f}x the reference's unrefined click)")
    print(f"one 200 px box with --refine zoom: tiny {o['prompt_zoomed_ms']:.0f} ms "
          f"({o['prompt_zoomed_ms'] / r['prompt_ms']:.2f}x the reference's unrefined click)")
    print(f"with --flip (the image and its mirror image): embedding {o['encoder_flip_ms']:.0f} ms, one click "
          f"{o['prompt_flip_ms']:.1f} ms ({r['encoder_ms'] / o['encoder_flip_ms']:.0f}x and "
          f"{r['prompt_ms'] / o['prompt_flip_ms']:.1f}x faster than the reference)")
    line = f"everything mode (32x32 points, defaults): tiny {o['everything_s']:.1f} s ({o['everything_masks']} masks)"
    if "everything_s" in r:
        line += f", reference ViT-B {r['everything_s']:.1f} s ({r['everything_s'] / o['everything_s']:.1f}x)"
    print(line)
    result["machine"] = machine.stop()
    print(machine.line())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
