"""Encoder and decoder latency: our torch model vs ONNX Runtime fp32 vs ONNX Runtime int8, in one
run, on the same weights and the same photo; plus the int8 accuracy cost (mask IoU vs fp32) on
real photos.

    .venv/bin/python benchmarks/bench_onnx.py [--models tiny,vit_b] [--repeat 20] [--json out.json]
        [--eval-data ../shared/eval-data --every 6]

`tiny` is the bundled default model; `vit_b` gets random weights (speed does not depend on
them). Runs of the three back-ends are interleaved, and medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from calibration import Machine, interleaved
from PIL import Image

from promptseg import Predictor, default_model, read_image, sample_image_path
from promptseg.cpu import tune_allocator
from promptseg.export import OnnxPredictor, export_model
from promptseg.model import get_config


def build(name: str):
    if name == "tiny":
        return default_model()
    torch.manual_seed(0)
    sam = get_config(name).build().eval()
    sam.model_type = name
    return sam


def int8_accuracy(folder: Path, every: int) -> dict:
    """Mean IoU of int8 vs fp32 masks of the default model: one click at each ground-truth
    object's farthest interior point and its tight box, on every `every`-th instance."""
    from promptseg.eval.datasets import load_dataset
    from promptseg.eval.protocols import farthest_interior_point, iou, tight_box

    with tempfile.TemporaryDirectory() as tmp:
        export_model(default_model(), tmp, quantize="int8")
        fp32, int8 = OnnxPredictor(tmp), OnnxPredictor(tmp, precision="int8")
        ious, n = [], 0
        for _, instances in load_dataset(folder):
            for inst in instances[::every]:
                for pred in (fp32, int8):
                    pred.set_image(inst.image_path)
                x, y = farthest_interior_point(inst.gt)
                for kw in ({"point_coords": np.array([[x, y]]), "point_labels": np.array([1])},
                           {"box": tight_box(inst.gt)}):
                    a = fp32.predict(**kw, multimask_output=False)[0][0]
                    b = int8.predict(**kw, multimask_output=False)[0][0]
                    ious.append(iou(b, a))
                n += 1
    return {"instances": n, "prompts": len(ious), "mean_iou_int8_vs_fp32": float(np.mean(ious)),
            "min_iou": float(np.min(ious))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,vit_b")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per back-end (vit_b encoder: a quarter)")
    ap.add_argument("--size", default="1500x1000", help="photo size WxH (coffee.png resized)")
    ap.add_argument("--eval-data", type=Path, default=None, help="real photos for the int8 accuracy figure")
    ap.add_argument("--every", type=int, default=6)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tune_allocator()
    torch.set_grad_enabled(False)
    w, h = (int(v) for v in args.size.split("x"))
    photo = np.asarray(Image.fromarray(read_image(sample_image_path("coffee.png"))).resize((w, h), Image.BILINEAR))
    click = {"point_coords": np.array([[0.5 * w, 0.5 * h]]), "point_labels": np.array([1])}
    results: dict = {"size": args.size, "torch": torch.__version__, "threads": torch.get_num_threads()}
    machine = Machine.start()
    for name in args.models.split(","):
        sam = build(name)
        with tempfile.TemporaryDirectory() as tmp:
            export_model(sam, tmp, quantize="int8")
            preds = {"torch": Predictor(sam), "onnx_fp32": OnnxPredictor(tmp), "onnx_int8": OnnxPredictor(tmp, "int8")}
            repeat = max(3, args.repeat // 4) if name != "tiny" else args.repeat
            enc = interleaved({k: (lambda p=p: p.set_image(photo)) for k, p in preds.items()}, repeat)
            dec = interleaved({k: (lambda p=p: p.predict(**click)) for k, p in preds.items()}, args.repeat * 2)
        row = {"encoder_s": enc, "click_s": dec,
               "encoder_speedup_vs_torch": {k: enc["torch"] / v for k, v in enc.items()},
               "click_speedup_vs_torch": {k: dec["torch"] / v for k, v in dec.items()}}
        results[name] = row
        print(f"{name} ({w}x{h} photo, medians; ratio = torch time / this time)")
        for label, t in (("image encoder", enc), ("one click -> full-size masks", dec)):
            print(f"  {label:30s} " + "  ".join(f"{k} {v * 1000:9.1f} ms ({t['torch'] / v:4.2f}x)" for k, v in t.items()))
        sys.stdout.flush()
    results["machine"] = machine.stop()
    print(machine.line())
    if args.eval_data is not None:
        acc = int8_accuracy(args.eval_data, args.every)
        results["int8_accuracy_tiny"] = acc
        print(f"int8 vs fp32, default model, {acc['instances']} real photos x (click, box): mean mask IoU "
              f"{acc['mean_iou_int8_vs_fp32']:.4f} (min {acc['min_iou']:.3f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
