"""The field's protocols for promptable segmentation, on any method that maps prompts to a mask.

- 1 click: a foreground click at the interior point farthest from the object's boundary; the
  top-scored mask and the best of the three candidates ("oracle") are both scored.
- Box: the object's tight box.
- NoC@85 / NoC@90: clicks are added one at a time, each at the centre (farthest interior point)
  of the largest error region, foreground for a missed region and background for a wrong one,
  until the IoU reaches the threshold; at most 20 clicks (an instance that never gets there
  counts 20).

Pixels marked "ignore" (GrabCut's unlabelled band, value 128) are left out of every IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_CLICKS = 20
NOC_THRESHOLDS = (0.85, 0.90)


@dataclass
class Instance:
    name: str
    dataset: str
    image_path: str
    gt: np.ndarray  # bool (H, W)
    ignore: np.ndarray | None = None  # bool (H, W): pixels left out of the score


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    if ignore is not None:
        keep = ~ignore
        pred, gt = pred & keep, gt & keep
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def farthest_interior_point(region: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the pixel of `region` farthest from its boundary (image edges count as
    boundary); among equally far pixels (a ridge), the one nearest the ridge's centre."""
    if not region.any():
        return None
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= dist.max() - 1e-3)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return int(xs[k]), int(ys[k])


def tight_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def next_click(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None) -> tuple[int, int, int] | None:
    """(x, y, label) at the centre of the largest error region; None when there is no error."""
    fn, fp = gt & ~pred, pred & ~gt
    if ignore is not None:
        fn, fp = fn & ~ignore, fp & ~ignore
    best, best_area, label = None, 0, 1
    for region, lab in ((fn, 1), (fp, 0)):
        if not region.any():
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[k, cv2.CC_STAT_AREA] > best_area:
            best, best_area, label = comp == k, int(stats[k, cv2.CC_STAT_AREA]), lab
    if best is None:
        return None
    x, y = farthest_interior_point(best)
    return x, y, label


class Method:
    """What a method offers the protocols. `set_image` once, then any of the prompt calls."""

    name = "method"
    supports_clicks = True
    supports_box = True

    def set_image(self, image: np.ndarray) -> None:
        raise NotImplementedError

    def clicks(self, points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Mask from the clicks so far (points (k, 2), labels (k,)), plus all candidates for the
        oracle score (first click only). Called with one more click each time, in order."""
        raise NotImplementedError

    def box(self, box: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def evaluate_instance(method: Method, inst: Instance, protocols: set[str], keep_masks: bool = False) -> dict:
    """Scores of one method on one instance (its image already set): keys click1,
    click1_oracle, box, noc85, noc90, ious; with keep_masks, the box and 1-click masks too."""
    out: dict = {}
    gt, ign = inst.gt, inst.ignore
    if "box" in protocols and method.supports_box:
        box = tight_box(gt)
        pred = method.box(box)
        out["box"] = iou(pred, gt, ign)
        if keep_masks:
            out["box_mask"], out["box_prompt"] = pred, box
    if method.supports_clicks and protocols & {"click", "noc"}:
        x, y = farthest_interior_point(gt)
        points, labels = [[x, y]], [1]
        mask, candidates = method.clicks(np.array(points, np.float32), np.array(labels))
        out["click1"] = iou(mask, gt, ign)
        out["click1_oracle"] = max(iou(c, gt, ign) for c in candidates) if candidates else out["click1"]
        if keep_masks:
            out["click_mask"], out["click_prompt"] = mask, (x, y)
        if "noc" in protocols:
            ious = [out["click1"]]
            while len(ious) < MAX_CLICKS and ious[-1] < max(NOC_THRESHOLDS):
                click = next_click(mask, gt, ign)
                if click is None:
                    break
                points.append([click[0], click[1]])
                labels.append(click[2])
                mask, _ = method.clicks(np.array(points, np.float32), np.array(labels))
                ious.append(iou(mask, gt, ign))
            out["ious"] = ious
            for t in NOC_THRESHOLDS:
                hit = next((i + 1 for i, v in enumerate(ious) if v >= t), MAX_CLICKS)
                out[f"noc{round(t * 100)}"] = hit
    return out


def summarise(rows: list[dict]) -> dict:
    """Mean of every score over instances (NoC counts averaged, IoUs as mIoU)."""
    keys = ("box", "click1", "click1_oracle", "noc85", "noc90")
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        if vals:
            out[k] = float(np.mean(vals))
    out["instances"] = len(rows)
    return out
