"""Run methods over datasets with the protocols; a table, a JSON report and example pictures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ..io import read_image
from .protocols import Instance, Method, evaluate_instance, summarise

COLUMNS = (
    ("box", "box mIoU", "{:.3f}"),
    ("click1", "1-click mIoU", "{:.3f}"),
    ("click1_oracle", "1-click oracle", "{:.3f}"),
    ("noc85", "NoC@85", "{:.2f}"),
    ("noc90", "NoC@90", "{:.2f}"),
)


def evaluate(datasets: list[tuple[str, list[Instance]]], methods: list[Method], protocols: set[str],
             advance: Callable[[], None] = lambda: None, keep: int = 0,
             errors: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Scores per dataset and method, the overall mean over all instances, and the first `keep`
    instances of each dataset with their masks (for pictures). An image that cannot be read is
    reported in `errors` and skipped."""
    report: dict = {"datasets": {}, "overall": {}}
    examples: list[dict] = []
    all_rows: dict[str, list[dict]] = {m.name: [] for m in methods}
    for name, instances in datasets:
        rows: dict[str, list[dict]] = {m.name: [] for m in methods}
        cache: tuple[str, np.ndarray] | None = None
        for i, inst in enumerate(instances):
            try:
                if cache is None or cache[0] != inst.image_path:
                    cache = (inst.image_path, read_image(inst.image_path))
                image = cache[1]
                if image.shape[:2] != inst.gt.shape:
                    raise ValueError(f"mask size {inst.gt.shape} differs from image size {image.shape[:2]}")
            except ValueError as exc:
                if errors is not None:
                    errors.append(f"{inst.image_path}: {exc}")
                advance()
                continue
            example = {"instance": inst, "image": image} if i < keep else None
            for m in methods:
                m.set_image(image)
                r = evaluate_instance(m, inst, protocols, keep_masks=example is not None)
                if example is not None:
                    example[m.name] = {k: r.pop(k) for k in list(r) if k.endswith(("_mask", "_prompt"))}
                rows[m.name].append({"name": inst.name, **r})
            if example is not None:
                examples.append(example)
            advance()
        report["datasets"][name] = {m: {"summary": summarise(r), "instances": r} for m, r in rows.items()}
        for m, r in rows.items():
            all_rows[m] += r
    report["overall"] = {m: summarise(r) for m, r in all_rows.items()}
    return report, examples


def table(report: dict) -> str:
    """A plain-text table: one row per dataset and method, then the overall rows."""
    width = max([16, *(len(m) for m in report["overall"])])
    header = f"{'dataset':<18} {'method':<{width}} {'n':>5} " + " ".join(f"{c[1]:>14}" for c in COLUMNS)
    lines = [header, "-" * len(header)]

    def row(ds: str, method: str, s: dict) -> str:
        cells = " ".join(f"{(c[2].format(s[c[0]]) if c[0] in s else '-'):>14}" for c in COLUMNS)
        return f"{ds:<18} {method:<{width}} {s['instances']:>5} {cells}"

    for ds, by_method in report["datasets"].items():
        for m, v in by_method.items():
            lines.append(row(ds, m, v["summary"]))
    if len(report["datasets"]) > 1:
        lines.append("-" * len(header))
        for m, s in report["overall"].items():
            lines.append(row("all", m, s))
    return "\n".join(lines)


def _panel(image: np.ndarray, mask: np.ndarray | None, gt: np.ndarray, title: str, box=None, point=None,
           width: int = 240) -> np.ndarray:
    from ..io import overlay

    view = overlay(image, [mask]) if mask is not None else image.copy()
    contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(view, contours, -1, (255, 255, 0), 1)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(view, (x0, y0), (x1, y1), (0, 255, 0), 2)
    if point is not None:
        cv2.circle(view, (int(point[0]), int(point[1])), 5, (0, 255, 0), -1)
        cv2.circle(view, (int(point[0]), int(point[1])), 5, (0, 0, 0), 1)
    s = width / view.shape[1]
    view = cv2.resize(view, (width, max(1, round(view.shape[0] * s))), interpolation=cv2.INTER_AREA)
    bar = np.full((18, width, 3), 255, np.uint8)
    cv2.putText(bar, title, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, view], 0)


def draw_examples(examples: list[dict], methods: list[Method], path: Path, width: int = 240) -> None:
    """One row per example: each method's box answer and 1-click answer over the image, the
    ground truth outlined in yellow and the prompt in green."""
    from ..io import write_image

    rows = []
    for ex in examples:
        inst: Instance = ex["instance"]
        panels = []
        for m in methods:
            got = ex[m.name]
            if "box_mask" in got:
                panels.append(_panel(ex["image"], got["box_mask"], inst.gt, f"{m.name}: box", box=got["box_prompt"],
                                     width=width))
            if "click_mask" in got:
                panels.append(_panel(ex["image"], got["click_mask"], inst.gt, f"{m.name}: 1 click",
                                     point=got["click_prompt"], width=width))
        h = max(p.shape[0] for p in panels)
        panels = [np.pad(p, ((0, h - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in panels]
        rows.append(np.concatenate(panels, 1))
    if not rows:
        return
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    write_image(np.concatenate(rows, 0), path)
