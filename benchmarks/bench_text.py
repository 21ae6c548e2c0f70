"""Text prompts on this CPU: the detector's time and SAM's time per image, for Grounding DINO
tiny's architecture (Swin-T + BERT-base, random weights: no detector weights can be fetched here;
the same work) with ViT-B and with the default model. SAM's part is compared with Meta's
`segment-anything` in the same run, on the same ViT-B state dict and the same boxes (what
Grounded-SAM runs): embedding, then one batched box prompt for every box found.

    .venv/bin/python benchmarks/bench_text.py [--repeat 5] [--boxes 10] [--json out.json]

Photos: the bundled ones at 1500x1000 and 1200x800 (SA-1B-like sizes, smaller), timing only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from calibration import Machine, median_seconds  # noqa: E402

CLASSES = ["cup", "spoon", "plate", "cat", "person"]


def measure(rgb, boxes, detector, ours: dict, ref, repeat: int) -> dict:
    """Median seconds on one photo: the detector, and each predictor's embedding and box prompt."""
    import torch

    h, w = rgb.shape[:2]
    row = {"image": f"{w}x{h}", "detector_s": median_seconds(lambda: detector.detect(rgb, CLASSES, 0.35, 0.25), repeat)}
    for name, predictor in ours.items():
        row[name] = {"embed_s": median_seconds(lambda p=predictor: p.set_image(rgb), repeat),
                     "boxes_s": median_seconds(lambda p=predictor: p.predict(box=boxes, multimask_output=False), repeat)}

    def ref_boxes():
        with torch.inference_mode():
            ref.predict_torch(None, None, ref.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32),
                                                                          (h, w)), multimask_output=False)

    with torch.inference_mode():
        row["reference vit_b"] = {"embed_s": median_seconds(lambda: ref.set_image(rgb), repeat),
                                  "boxes_s": median_seconds(ref_boxes, repeat)}
    return row


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from detectors import make_grounding_dino
    from promptseg import Predictor, build_model, load_predictor, sample_image_path
    from promptseg.text import load_detector

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--boxes", type=int, default=10, help="boxes prompted per image (SAM's part)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    photos = [np.asarray(Image.open(sample_image_path(n)).convert("RGB").resize(size, Image.BICUBIC))
              for n, size in (("coffee", (1500, 1000)), ("chelsea", (1200, 800)))]
    machine = Machine.start()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        detector = load_detector(make_grounding_dino(Path(tmp) / "gdino-tiny", full=True))
        params = sum(p.numel() for p in detector.model.parameters()) / 1e6
        print(f"Grounding DINO tiny's architecture: {params:.0f} M parameters (random weights)", flush=True)
        torch.manual_seed(0)
        vit_b = build_model("vit_b")  # random weights, shared with the reference below
        from segment_anything import SamPredictor, sam_model_registry

        ref_sam = sam_model_registry["vit_b"]()
        ref_sam.load_state_dict(vit_b.state_dict())
        ref = SamPredictor(ref_sam.eval())
        ours = {"vit_b": Predictor(vit_b), "tiny (default)": load_predictor()}
        rng = np.random.default_rng(0)
        for k, rgb in enumerate(photos):
            h, w = rgb.shape[:2]
            x0 = rng.uniform(0, w * 0.7, args.boxes)
            y0 = rng.uniform(0, h * 0.7, args.boxes)
            boxes = np.stack([x0, y0, x0 + rng.uniform(40, w * 0.3, args.boxes),
                              y0 + rng.uniform(40, h * 0.3, args.boxes)], 1)
            rows.append(measure(rgb, boxes, detector, ours, ref, args.repeat))
            row = rows[-1]
            print(f"image {k + 1} ({w}x{h}): detector {row['detector_s']:.2f} s; " + "; ".join(
                f"{n} embed {row[n]['embed_s']:.2f} s + {args.boxes} boxes {row[n]['boxes_s'] * 1000:.0f} ms"
                for n in (*ours, "reference vit_b")), flush=True)
    summary = machine.stop()
    med = lambda key, part: statistics.median(r[key][part] for r in rows)  # noqa: E731
    det = statistics.median(r["detector_s"] for r in rows)
    print(f"\n| per image (median of {len(rows)}) | detector | SAM embedding | {args.boxes} boxes | total |")
    print("|---|---|---|---|---|")
    for name in ("vit_b", "reference vit_b", "tiny (default)"):
        e, b = med(name, "embed_s"), med(name, "boxes_s")
        print(f"| Grounding DINO tiny + {name} | {det:.2f} s | {e:.2f} s | {b * 1000:.0f} ms | {det + e + b:.2f} s |")
    ratio_e = med("reference vit_b", "embed_s") / med("vit_b", "embed_s")
    ratio_b = med("reference vit_b", "boxes_s") / med("vit_b", "boxes_s")
    ratio_t = (det + med("reference vit_b", "embed_s") + med("reference vit_b", "boxes_s")) / (
        det + med("vit_b", "embed_s") + med("vit_b", "boxes_s"))
    print(f"ViT-B, ours against segment-anything: embedding {ratio_e:.2f}x, boxes {ratio_b:.2f}x, "
          f"whole text prompt (same detector) {ratio_t:.2f}x")
    print(machine.line())
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratios": {"embed": ratio_e, "boxes": ratio_b,
                                         "total": ratio_t}, "machine": summary, "args": vars(args)},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
