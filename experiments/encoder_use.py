"""How much a model's mask decoder reads its image embedding: box and click IoU with the real
embedding against the same prompts on an all-zero embedding.

    .venv/bin/python experiments/encoder_use.py [--checkpoint W] [--masks 48] [--sources DIR ...] [-o out.json]

Masks come from the training sampler (random crops, flips, the training input size) over SA-1B
folders of training data, by default the synthetic training scenes and the BSDS500 training
photos, one source at a time, seed 0. Each
mask gets the training recipe's noisy box and one click drawn uniformly inside it. Reported per
source: box IoU with the embedding, with zeros, and of the drawn box itself filled; the click's
top-scored and best-of-3 IoU with the embedding and with zeros. A decoder that only reshapes the
drawn prompt scores the same on zeros; one that reads the image loses there. ../shared/eval-data
is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from training_sources import add_sources_option, refuse_eval_data

from promptseg import build_model, default_model
from promptseg.model.prompt_encoder import draw_prompt_mask
from promptseg.train.data import MaskSampler, read_sa1b
from promptseg.train.loop import _inputs
from promptseg.train.recipe import RecipeOptions, mask_iou, noisy_boxes, sample_points


@torch.no_grad()
def measure(model, entries, masks: int, seed: int = 0) -> dict:
    size = model.image_encoder.img_size
    sampler = MaskSampler([(entries, 1.0)], size, masks_per_image=1, min_area=0.003)
    batch = sampler.batch(masks, np.random.default_rng(seed))
    gen = torch.Generator().manual_seed(seed)
    gt = batch.masks[:, 0]
    boxes = noisy_boxes(gt > 0.5, gen, RecipeOptions(), size)
    clicks = sample_points(gt > 0.5, gen, 1)[:, None]
    embeddings = model.image_encoder(_inputs(model, batch, "cpu"))
    pe = model.prompt_encoder.get_dense_pe()

    def ious(emb, points, box, multimask):
        sparse, dense = model.prompt_encoder(points, box, None)
        low, pred = model.mask_decoder(emb, pe, sparse, dense, multimask)
        up = F.interpolate(low, gt.shape[-2:], mode="bilinear", align_corners=False)
        every = mask_iou(up, gt[:, None].expand_as(up))
        top = every[torch.arange(len(gt)), pred.argmax(1)]
        return float(top.mean()), float(every.max(1).values.mean())

    filled = draw_prompt_mask(None, boxes, (size, size), (size, size), len(gt))  # the box as the model draws it
    zeros = torch.zeros_like(embeddings)
    one_click = (clicks, torch.ones(len(gt), 1))
    out = {"masks": len(gt), "box_filled": float(mask_iou(filled[:, 0], gt).mean())}
    for name, emb in (("embedding", embeddings), ("zeros", zeros)):
        out[f"box_{name}"] = ious(emb, None, boxes, False)[0]
        top, oracle = ious(emb, one_click, None, True)
        out[f"click_top_{name}"], out[f"click_oracle_{name}"] = top, oracle
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="tiny checkpoint (default: the bundled weights)")
    ap.add_argument("--masks", type=int, default=48, help="masks per source (default 48)")
    add_sources_option(ap)
    ap.add_argument("-o", "--output", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    refuse_eval_data(args.sources, "measure")
    model = build_model("tiny", checkpoint=args.checkpoint) if args.checkpoint else default_model()
    model.eval()
    result = {src.name: measure(model, read_sa1b(src), args.masks) for src in args.sources}
    for name, r in result.items():
        print(f"{name:12s} box: embedding {r['box_embedding']:.3f}  zeros {r['box_zeros']:.3f}  filled box {r['box_filled']:.3f}"
              f" | click top/oracle: embedding {r['click_top_embedding']:.3f}/{r['click_oracle_embedding']:.3f}"
              f"  zeros {r['click_top_zeros']:.3f}/{r['click_oracle_zeros']:.3f}")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
