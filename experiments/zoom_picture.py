"""Draw the zoom refinement at work on small objects: for objects under --max-area of their scene
(every --every-th instance of an evaluation dataset, the first --count of them), the box and the
one-click answers of the model alone and zoomed, each panel cropped around the object so that it
can be seen. The ground truth is outlined in yellow, the prompt drawn in green.

    .venv/bin/python experiments/zoom_picture.py out/data/synth-heldout -o docs/zoom_small_objects.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from promptseg import Predictor, default_model, read_image
from promptseg.eval.datasets import load_dataset
from promptseg.eval.protocols import farthest_interior_point, iou, tight_box
from promptseg.eval.run import _panel
from promptseg.io import write_image
from promptseg.refine import zoom_refine, zoom_window


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--max-area", type=float, default=0.02)
    ap.add_argument("--count", type=int, default=5)
    ap.add_argument("--width", type=int, default=200)
    args = ap.parse_args()
    predictor = Predictor(default_model())
    instances = [i for _, insts in load_dataset(args.data) for i in insts[:: args.every]]
    picked = [i for i in instances if i.gt.mean() < args.max_area][: args.count]
    rows = []
    for inst in picked:
        image = read_image(inst.image_path)
        predictor.set_image(image)
        box = tight_box(inst.gt)
        point = np.array([farthest_interior_point(inst.gt)], np.float64)
        answers = []
        logits, _, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
        answers.append(("box", logits[0], zoom_refine(predictor, image, logits[0], box=box)))
        logits, scores, _ = predictor.predict(point, np.array([1]), return_logits=True)
        top = logits[int(np.argmax(scores))]
        answers.append(("1 click", top, zoom_refine(predictor, image, top, point, np.array([1]))))
        window = zoom_window(inst.gt.shape, box, 256, context=2.5, min_side=0.0, max_fraction=2.0)
        x0, y0, x1, y1 = window
        shift = np.array([x0, y0, x0, y0])
        crop = (slice(y0, y1), slice(x0, x1))
        panels = []
        for prompt, plain, zoomed in answers:
            for name, lg in (("model", plain), ("zoom", zoomed)):
                mask = lg > 0
                title = f"{name}, {prompt}: IoU {iou(mask, inst.gt):.2f}"
                prompt_kw = {"box": box - shift} if prompt == "box" else {"point": point[0] - shift[:2]}
                panels.append(_panel(image[crop], mask[crop], inst.gt[crop], title, width=args.width, **prompt_kw))
        panels = [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels]
        rows.append(np.pad(np.concatenate(panels, 1), ((0, 4), (0, 0), (0, 0)), constant_values=255))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_image(np.concatenate(rows, 0), args.output)
    print(f"{len(picked)} objects drawn into {args.output}")


if __name__ == "__main__":
    main()
