"""Which of a lone click's three candidates to keep? Measure rules against the ground truth.

For every instance of a dataset (a click at the interior point farthest from its boundary, as
`promptseg eval` asks one click), the default model's three candidates are scored against the
ground truth, and each rule's kept mask is compared with the highest predicted IoU's (SAM's
rule): mean IoU, and the paired difference with its standard error. Rules: predicted IoU plus
w x stability (low-res logits at 0 +- 1, as everything mode computes it), stability alone, the
largest or smallest candidate within d of the top score, and a fixed candidate index.

Meant for training-side data (MODEL_CARD.md, Experiments, "Choosing among the candidates"):

    .venv/bin/python experiments/candidate_choice.py out/data/synth-val ../shared/train-data/bsds500 --flip
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from promptseg import FlipPredictor, Predictor, default_model, read_image
from promptseg.eval.datasets import load_dataset
from promptseg.eval.protocols import farthest_interior_point, iou
from promptseg.masks import stability_score_np


def candidates(predictor, path: Path) -> np.ndarray:
    """(N, 3, 4): predicted IoU, stability, area fraction and true IoU of each candidate."""
    rows = []
    for _, instances in load_dataset(path):
        current = None
        for inst in instances:
            if current != inst.image_path:
                predictor.set_image(read_image(inst.image_path))
                current = inst.image_path
            point = np.array([farthest_interior_point(inst.gt)], np.float32)
            masks, scores, low = predictor.predict(point, np.array([1]), multimask_output=True)
            rows.append([[scores[k], np.nan_to_num(stability_score_np(low[k], predictor.mask_threshold, 1.0)),
                          masks[k].mean(), iou(masks[k], inst.gt, inst.ignore)] for k in range(len(scores))])
    return np.array(rows, np.float64)


def rules(a: np.ndarray) -> dict[str, np.ndarray]:
    score, stability, area = a[..., 0], a[..., 1], a[..., 2]
    out = {"predicted IoU (SAM)": np.argmax(score, 1), "stability alone": np.argmax(stability, 1)}
    for w in (0.1, 0.25, 0.5, 1.0):
        out[f"predicted IoU + {w} x stability"] = np.argmax(score + w * stability, 1)
    for d in (0.02, 0.05, 0.1):
        near = score >= score.max(1, keepdims=True) - d
        out[f"largest within {d}"] = np.argmax(np.where(near, area, -1), 1)
        out[f"smallest within {d}"] = np.argmin(np.where(near, area, 2), 1)
    for k in range(a.shape[1]):
        out[f"always candidate {k}"] = np.full(len(a), k)
    out["oracle (best of 3)"] = np.argmax(a[..., 3], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, nargs="+")
    ap.add_argument("--flip", action="store_true", help="average with the mirror view (FlipPredictor)")
    args = ap.parse_args()
    predictor = Predictor(default_model())
    if args.flip:
        predictor = FlipPredictor(predictor)
    for path in args.data:
        a = candidates(predictor, path)
        truth, idx = a[..., 3], np.arange(len(a))
        base = truth[idx, np.argmax(a[..., 0], 1)]
        print(f"{path} ({len(a)} instances{', flip' if args.flip else ''})")
        for name, pick in rules(a).items():
            kept = truth[idx, pick]
            d = kept - base
            print(f"  {name:32s} {kept.mean():.4f}  {d.mean():+.4f} (SE {d.std(ddof=1) / np.sqrt(len(d)):.4f})")


if __name__ == "__main__":
    main()
