"""Choose a model's everything-mode filter (predicted-IoU and stability thresholds) on training data.

    .venv/bin/python experiments/choose_everything_thresholds.py [--checkpoint W] [--images 40] [--flip] [-o out.json]

Everything mode runs once per image with a low predicted-IoU floor and no duplicate removal, so
that every candidate a stricter filter could keep is at hand; each (predicted IoU, stability)
pair is then applied after the fact, followed by the generator's box NMS at 0.7, exactly as the
generator would have done it. A kept mask is a hit when its IoU with some annotated mask is at
least 0.5; an annotated mask (>= 0.3 % of the image) is found when some kept mask reaches 0.5
with it. The pair with the best F1 of hits and finds (mean over the sources) wins; ties go to
the stricter pair (fewer masks, faster). Only training data: by default the synthetic training
scenes and the BSDS500 training photos; ../shared/eval-data is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from training_sources import add_sources_option, refuse_eval_data

from promptseg import FlipPredictor, MaskGenerator, Predictor, build_model, default_model
from promptseg.masks import batched_nms
from promptseg.train.data import read_sa1b

IOU_GRID = [round(0.05 * i, 2) for i in range(2, 15)]  # 0.10 .. 0.70
STABILITY_GRID = [0.0, 0.5, 0.7, 0.8, 0.9]
MATCH_IOU = 0.5
MIN_GT_AREA = 0.003
NMS = 0.7  # the generator's default box_nms_thresh


def candidates(generator: MaskGenerator, image: np.ndarray, gt_rles: list[dict]) -> dict:
    """Every candidate above the floor: its predicted IoU, stability, XYXY box and its IoU with
    each annotated mask."""
    records = generator.generate(image)
    if not records:
        return {"iou": np.zeros(0), "stability": np.zeros(0), "boxes": np.zeros((0, 4)), "match": np.zeros((0, len(gt_rles)))}
    dt = [r["segmentation"] for r in records]
    match = np.asarray(mask_utils.iou(dt, gt_rles, [0] * len(gt_rles))).reshape(len(dt), len(gt_rles))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)], dtype=np.float64)
    return {
        "iou": np.array([r["predicted_iou"] for r in records]),
        "stability": np.array([r["stability_score"] for r in records]),
        "boxes": boxes,
        "match": match,
    }


def score(found: list[dict], iou_t: float, stab_t: float, nms: float) -> dict:
    kept_total = hits = finds = gt_total = 0
    for c in found:
        keep = np.flatnonzero((c["iou"] > iou_t) & (c["stability"] >= stab_t))
        if len(keep):
            order = batched_nms(torch.as_tensor(c["boxes"][keep]), torch.as_tensor(c["iou"][keep]), nms).numpy()
            keep = keep[order]
        match = c["match"][keep]
        kept_total += len(keep)
        hits += int((match >= MATCH_IOU).any(axis=1).sum())
        gt_total += match.shape[1]
        finds += int((match >= MATCH_IOU).any(axis=0).sum())
    precision = hits / kept_total if kept_total else 0.0
    recall = finds / gt_total if gt_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "masks_per_image": kept_total / max(len(found), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="Weights to tune for (default: the shipped default model).")
    add_sources_option(ap)
    ap.add_argument("--images", type=int, default=40, help="Images drawn from each source.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor", type=float, default=min(IOU_GRID), help="Predicted-IoU floor of the single run.")
    ap.add_argument("--flip", action="store_true", help="Average each click's answers with the mirror image's.")
    ap.add_argument("-o", "--output", type=Path, help="Write every pair's figures as JSON.")
    args = ap.parse_args()
    refuse_eval_data(args.sources, "tune")
    model = build_model(checkpoint=args.checkpoint) if args.checkpoint else default_model()
    if args.flip:
        model = FlipPredictor(Predictor(model))
    generator = MaskGenerator(model, pred_iou_thresh=args.floor, stability_score_thresh=0.0,
                              box_nms_thresh=1.0, output_mode="coco_rle")
    rng = np.random.default_rng(args.seed)
    per_source: dict[str, list[dict]] = {}
    for src in args.sources:
        entries = read_sa1b(src)
        pick = rng.choice(len(entries), size=min(args.images, len(entries)), replace=False)
        found = []
        t0 = time.perf_counter()
        for n, i in enumerate(sorted(pick.tolist())):
            entry = entries[i]
            image = entry.load()
            area = image.shape[0] * image.shape[1]
            gt = [r for r in entry.rles if mask_utils.area(r) >= MIN_GT_AREA * area]
            if gt:
                found.append(candidates(generator, image, gt))
            if sys.stderr.isatty():
                print(f"\r{src.name}: {n + 1}/{len(pick)} images", end="", file=sys.stderr, flush=True)
        print(f"\r{src.name}: {len(pick)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        per_source[src.name] = found

    rows = []
    for iou_t in IOU_GRID:
        if iou_t < args.floor:
            continue
        for stab_t in STABILITY_GRID:
            figs = {name: score(found, iou_t, stab_t, NMS)
                    for name, found in per_source.items()}
            rows.append({"pred_iou_thresh": iou_t, "stability_score_thresh": stab_t, "sources": figs,
                         "f1": float(np.mean([f["f1"] for f in figs.values()]))})
    names = list(per_source)
    print("pred_iou  stab  " + "  ".join(f"{n[:14]:>14s} P/R/F1 masks" for n in names) + "  mean F1")
    for r in rows:
        cells = "  ".join(
            f"{f['precision']:.2f}/{f['recall']:.2f}/{f['f1']:.2f} {f['masks_per_image']:5.1f}" for f in r["sources"].values()
        )
        print(f"{r['pred_iou_thresh']:8.2f}  {r['stability_score_thresh']:4.1f}  {cells:>{len(cells)}}  {r['f1']:.3f}")
    best = max(rows, key=lambda r: (round(r["f1"], 3), r["pred_iou_thresh"], r["stability_score_thresh"]))
    print(f"best: pred_iou_thresh={best['pred_iou_thresh']} stability_score_thresh={best['stability_score_thresh']} "
          f"(mean F1 {best['f1']:.3f})")
    if args.output:
        args.output.write_text(json.dumps({"checkpoint": args.checkpoint or "default", "flip": args.flip,
                                           "images_per_source": args.images,
                                           "seed": args.seed, "best": best, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
