"""`promptseg eval --task proposals | instances`: the SAM paper's zero-shot object proposals and
instance segmentation, scored with pycocotools.

- proposals: a 64 x 64 grid of clicks over the whole image (no crops), every candidate kept (no
  IoU or stability filter), duplicates removed by box NMS at 0.9, ranked by the mean of the
  predicted IoU and the stability score; mask average recall (IoU 0.5:0.95) of the annotated
  objects within the top 10 / 100 / 1000 proposals, and by object size at 1000.
- instances: one box per detected object as the prompt, its single mask fed back once with the
  same box as the mask input; the detector's class and score kept; COCO mask AP. Without a
  detections file, the annotated boxes (an oracle row, labelled so).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import read_image
from .datasets import readable

PROPOSAL_GRID = 64
PROPOSAL_NMS = 0.9
PROPOSAL_LIMITS = (10, 100, 1000)
# The SAM paper's figures (quoted, never measured here): LVIS v1 mask AR@1000 (table 4) and COCO
# mask AP with ViTDet-H boxes (table 5), SAM ViT-H beside the detector's own masks.
QUOTED_PROPOSALS = {"SAM ViT-H, LVIS (quoted)": {"AR@1000": 0.593},
                    "ViTDet-H, LVIS (quoted)": {"AR@1000": 0.630}}
QUOTED_INSTANCES = {"SAM ViT-H + ViTDet-H boxes, COCO (quoted)": {"AP": 0.465},
                    "ViTDet-H, COCO (quoted)": {"AP": 0.510}}


@dataclass
class ObjectImage:
    """A photo and its annotated objects (COCO annotations with compressed RLE masks)."""

    key: str  # the image's id in detection files: a COCO image id, or the file's stem
    image_path: Path
    height: int
    width: int
    objects: list[dict] = field(default_factory=list)


def _quiet(fn, *args, **kwargs):
    """pycocotools prints its progress; the report is ours."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def object_annotation(rle: dict, category: int = 1) -> dict:
    """A COCO annotation (segmentation, area, bbox, category_id, iscrowd 0) of a compressed RLE."""
    from pycocotools import mask as mask_utils

    return {"segmentation": rle, "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(),
            "category_id": int(category), "iscrowd": 0}


def encode_mask(mask: np.ndarray) -> dict:
    """A bool (H, W) mask as COCO compressed RLE with a str `counts` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def load_object_dataset(path: str | Path) -> tuple[str, list[ObjectImage], dict[int, str]]:
    """(name, photos with every annotated object, categories) from a COCO instances .json (images
    in `images/` beside it, or beside the file), an SA-1B folder, or an images/ + masks/ folder
    (one object per mask; the photos repeated under several stems, as in COCO MVal, are one photo
    with several objects). Crowd regions and GrabCut's ignored band are not objects."""
    from .datasets import IGNORE_VALUE, find_image, is_mask_folder

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"evaluation data {path} does not exist")
    if path.is_file() and path.suffix == ".json":
        return _load_coco(path)
    if is_mask_folder(path):
        from PIL import Image

        by_content: dict[str, ObjectImage] = {}
        for mask_path in sorted((path / "masks").glob("*.png")):
            image = find_image(path / "images", mask_path.stem)
            if image is None:
                continue
            m = np.asarray(Image.open(mask_path).convert("L")) > IGNORE_VALUE
            if not m.any():
                continue
            digest = hashlib.sha1(image.read_bytes()).hexdigest()
            item = by_content.setdefault(digest, ObjectImage(mask_path.stem, image, *m.shape))
            if m.shape != (item.height, item.width):
                raise ValueError(f"{mask_path}: mask size {m.shape} differs from the photo's other masks")
            item.objects.append(object_annotation(encode_mask(m)))
        if not by_content:
            raise ValueError(f"{path} has no photo with a mask")
        return path.name, list(by_content.values()), {1: "object"}
    if path.is_dir() and any(path.glob("*.json")):
        from ..train.data import read_sa1b

        out = []
        for entry in read_sa1b(path):
            h, w = entry.rles[0]["size"]
            out.append(ObjectImage(Path(entry.image_path).stem, Path(entry.image_path), h, w,
                                   [object_annotation(r) for r in entry.rles]))
        if not out:
            raise ValueError(f"{path} has no SA-1B record")
        return path.name, out, {1: "object"}
    raise ValueError(f"{path} is not an object dataset: expected a COCO instances .json, an SA-1B folder "
                     "or images/ + masks/")


def _load_coco(path: Path) -> tuple[str, list[ObjectImage], dict[int, str]]:
    from pycocotools.coco import COCO

    try:
        coco = _quiet(COCO, str(path))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as exc:
        raise ValueError(f"{path} is not a COCO instances file ({exc})") from None
    folders = [path.parent / "images", path.parent]
    out = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        image = next((f / info["file_name"] for f in folders if (f / info["file_name"]).is_file()), None)
        anns = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        if image is None or not anns:
            continue
        objects = []
        for a in anns:
            rle = coco.annToRLE(a)
            if isinstance(rle.get("counts"), bytes):
                rle["counts"] = rle["counts"].decode("ascii")
            objects.append(object_annotation(rle, a["category_id"]))
        out.append(ObjectImage(str(image_id), image, int(info["height"]), int(info["width"]), objects))
    if not out:
        raise ValueError(f"{path} holds no annotated photo found in {folders[0]} or {folders[1]}")
    return path.stem, out, {int(c["id"]): str(c.get("name", c["id"])) for c in coco.dataset.get("categories", [])}


def coco_evaluate(images: list[ObjectImage], results: list[dict], categories: dict[int, str],
                  proposals: bool) -> dict[str, float]:
    """Scores of `results` ({"image": index into images, "segmentation": RLE, "score",
    "category_id"}) with pycocotools' COCOeval on masks: for proposals, class-agnostic average
    recall at 10 / 100 / 1000 and by size (AR_small/medium/large at 1000); for instances, AP,
    AP50, AP75 and by size."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    anns, n = [], 0
    for i, item in enumerate(images):
        for obj in item.objects:
            n += 1
            anns.append({**obj, "id": n, "image_id": i + 1,
                         "category_id": 1 if proposals else obj["category_id"]})
    gt.dataset = {"images": [{"id": i + 1, "height": it.height, "width": it.width} for i, it in enumerate(images)],
                  "annotations": anns,
                  "categories": [{"id": 1, "name": "object"}] if proposals else
                  [{"id": k, "name": v} for k, v in categories.items()]}
    _quiet(gt.createIndex)
    dets = [{"image_id": r["image"] + 1, "category_id": 1 if proposals else int(r["category_id"]),
             "segmentation": r["segmentation"], "score": float(r["score"])} for r in results]
    if not dets:
        return ({f"AR@{k}": 0.0 for k in PROPOSAL_LIMITS} | {"AR_small": 0.0, "AR_medium": 0.0, "AR_large": 0.0}
                if proposals else {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AP_small": 0.0, "AP_medium": 0.0,
                                   "AP_large": 0.0})
    dt = _quiet(gt.loadRes, dets)
    ev = COCOeval(gt, dt, "segm")
    if proposals:
        ev.params.useCats = 0
        ev.params.maxDets = list(PROPOSAL_LIMITS)
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    s = [float(v) if v >= 0 else None for v in ev.stats]  # -1: no object of that size
    if proposals:
        return {"AR@10": s[6], "AR@100": s[7], "AR@1000": s[8], "AR_small": s[9], "AR_medium": s[10],
                "AR_large": s[11]}
    return {"AP": s[0], "AP50": s[1], "AP75": s[2], "AP_small": s[3], "AP_medium": s[4], "AP_large": s[5]}


def mask_proposals(predictor, image: np.ndarray, points_per_side: int = PROPOSAL_GRID,
                   nms: float = PROPOSAL_NMS, limit: int = max(PROPOSAL_LIMITS)) -> list[dict]:
    """The paper's proposals of one image, best first: {"segmentation": RLE, "score"}."""
    from ..everything import MaskGenerator

    gen = MaskGenerator(predictor, points_per_side=points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                        box_nms_thresh=nms, crop_n_layers=0, output_mode="coco_rle")
    found = gen.generate(image)
    for r in found:
        r["score"] = 0.5 * (r["predicted_iou"] + r["stability_score"])
    found.sort(key=lambda r: -r["score"])
    return [{"segmentation": r["segmentation"], "score": r["score"]} for r in found[:limit]]


def box_masks(predictor, image: np.ndarray, boxes: np.ndarray) -> list[dict]:
    """One mask per box (x0, y0, x1, y1): the box prompt, then the same box with its own low-res
    answer as the mask input. Returns {"segmentation": RLE} per box."""
    if len(boxes) == 0:
        return []
    predictor.set_image(image)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    _, _, low = predictor.predict(box=boxes, multimask_output=False)
    masks, _, _ = predictor.predict(box=boxes, mask_input=np.asarray(low), multimask_output=False)
    masks = np.asarray(masks).reshape(len(boxes), -1, *np.shape(masks)[-2:])[:, 0]  # one box comes back unbatched
    return [{"segmentation": encode_mask(m)} for m in masks]


def read_detections(path: str | Path, images: list[ObjectImage], categories: dict[int, str]) -> dict[str, list[dict]]:
    """A COCO results file (a list of {"image_id", "category_id", "bbox" XYWH, "score"}) grouped
    by image key; `image_id` is the COCO image id, or the photo's stem for a folder dataset."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--boxes {path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, list):
        raise ValueError(f"--boxes {path}: expected a list of detections in COCO results format")
    keys = {it.key for it in images}
    out: dict[str, list[dict]] = {}
    for k, d in enumerate(doc):
        try:
            key = str(d["image_id"])
            x, y, w, h = (float(v) for v in d["bbox"])
            det = {"box": [x, y, x + w, y + h], "score": float(d.get("score", 1.0)),
                   "category_id": int(d.get("category_id", 1))}
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"--boxes {path}: detection {k} needs image_id, bbox [x, y, w, h] and score") from None
        if not all(np.isfinite(det["box"])) or w <= 0 or h <= 0:
            raise ValueError(f"--boxes {path}: detection {k} has an empty or non-finite box")
        if det["category_id"] not in categories and len(categories) > 1:
            raise ValueError(f"--boxes {path}: detection {k} has category {det['category_id']}, not in the dataset")
        if key in keys:
            out.setdefault(key, []).append(det)
    return out


def _fitting_photo(item: ObjectImage) -> tuple[np.ndarray]:
    image = read_image(item.image_path)
    if image.shape[:2] != (item.height, item.width):
        raise ValueError(f"annotations are {item.height}x{item.width}, the photo {image.shape[:2]}")
    return (image,)


def evaluate_objects(images: list[ObjectImage], categories: dict[int, str], predictor, task: str,
                     detections: dict[str, list[dict]] | None = None, points_per_side: int = PROPOSAL_GRID,
                     advance: Callable[..., None] = lambda *a, **k: None, errors: list[str] | None = None) -> dict:
    """Runs `task` ("proposals" or "instances") over the photos and scores it; a photo that
    cannot be read, or whose masks do not fit it, is reported in `errors` and skipped."""
    if task not in ("proposals", "instances"):
        raise ValueError(f"unknown object task {task!r}")
    results: list[dict] = []
    scored: list[ObjectImage] = []
    seconds: list[float] = []
    for item, image in readable(images, _fitting_photo, advance, errors):
        index = len(scored)
        t0 = time.perf_counter()
        if task == "proposals":
            for r in mask_proposals(predictor, image, points_per_side):
                results.append({"image": index, **r})
        else:
            if detections is None:  # the oracle: the annotated boxes
                dets = [{"box": [o["bbox"][0], o["bbox"][1], o["bbox"][0] + o["bbox"][2], o["bbox"][1] + o["bbox"][3]],
                         "score": 1.0, "category_id": o["category_id"]} for o in item.objects]
            else:
                dets = detections.get(item.key, [])
            for d, r in zip(dets, box_masks(predictor, image, np.array([d["box"] for d in dets]))):
                results.append({"image": index, **r, "score": d["score"], "category_id": d["category_id"]})
        seconds.append(time.perf_counter() - t0)
        scored.append(item)
        advance()
    report: dict = {"task": task, "images": len(scored), "objects": sum(len(i.objects) for i in scored)}
    if task == "proposals":
        report["points_per_side"] = points_per_side
    else:
        report["boxes"] = "detections" if detections is not None else "oracle (annotated boxes)"
    if scored:
        report["scores"] = coco_evaluate(scored, results, categories, proposals=task == "proposals")
        report["seconds_per_image"] = float(np.median(seconds))
    report["quoted"] = QUOTED_PROPOSALS if task == "proposals" else QUOTED_INSTANCES
    return report


def object_table(report: dict, name: str) -> str:
    """Our row, then the paper's rows marked as quoted."""
    cols = (["AR@10", "AR@100", "AR@1000", "AR_small", "AR_medium", "AR_large"] if report["task"] == "proposals"
            else ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"])
    label = name if report["task"] == "proposals" else f"{name}, {report['boxes']}"
    rows = [(label, {**report.get("scores", {}), "s": report.get("seconds_per_image")})]
    rows += [(k, v) for k, v in report["quoted"].items()]
    width = max(len(r[0]) for r in rows)
    header = f"{'method':<{width}} " + " ".join(f"{c:>9}" for c in cols) + f" {'s/photo':>8}"
    lines = [f"{report['task']}: {report['images']} photos, {report['objects']} objects", header, "-" * len(header)]
    for n, v in rows:
        cells = " ".join(f"{v[c]:>9.3f}" if v.get(c) is not None else f"{'-':>9}" for c in cols)
        t = v.get("s")
        lines.append(f"{n:<{width}} {cells} {(f'{t:8.2f}' if t is not None else ' ' * 7 + '-')}")
    return "\n".join(lines)
