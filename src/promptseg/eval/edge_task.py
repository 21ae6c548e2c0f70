"""`promptseg eval --task edges`: zero-shot edge detection scored as the BSDS500 benchmark does,
the model beside classical rows, with the SAM paper's rows quoted."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import read_image
from .boundaries import edge_scores, image_counts, thresholds
from .datasets import find_image, readable

# The SAM paper, table 3: zero-shot edge detection on BSDS500 test (ODS, OIS, AP, R50; None where
# the paper gives no figure). Printed beside our rows, marked as quoted; never measured here.
QUOTED = {
    "SAM ViT-H (quoted)": {"ODS": 0.768, "OIS": 0.786, "AP": 0.794, "R50": 0.928},
    "HED (quoted)": {"ODS": 0.788, "OIS": 0.808, "AP": 0.840, "R50": 0.923},
    "Canny (quoted)": {"ODS": 0.600, "OIS": 0.640, "AP": 0.580, "R50": None},
}
MEASURES = ("ODS", "OIS", "AP", "R50")


@dataclass
class BoundaryImage:
    """A photo and its human boundaries: one PNG per annotator (non-zero = boundary) or a BSDS
    groundTruth .mat file holding every annotator."""

    stem: str
    image_path: Path
    sources: list[Path] = field(default_factory=list)

    def boundaries(self) -> list[np.ndarray]:
        if len(self.sources) == 1 and self.sources[0].suffix == ".mat":
            return _read_mat(self.sources[0])
        from PIL import Image

        return [np.asarray(Image.open(p).convert("L")) > 0 for p in self.sources]


def _read_mat(path: Path) -> list[np.ndarray]:
    """The annotators' `Boundaries` of a BSDS500 groundTruth .mat file (read as data, no code)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        cells = loadmat(path, simplify_cells=True)["groundTruth"]
    except (KeyError, ValueError, TypeError, OSError, MatReadError) as exc:
        raise ValueError(f"{path} is not a BSDS groundTruth .mat file ({exc})") from None
    cells = [cells] if isinstance(cells, dict) else list(cells)
    out = [np.asarray(c["Boundaries"]) > 0 for c in cells if isinstance(c, dict) and "Boundaries" in c]
    if not out:
        raise ValueError(f"{path} holds no annotator's Boundaries")
    return out


def is_boundary_folder(path: Path) -> bool:
    return (path / "images").is_dir() and any((path / d).is_dir() for d in ("boundaries_per_annotator", "groundTruth"))


def load_boundary_dataset(path: str | Path) -> list[BoundaryImage]:
    """The photos of a boundary dataset: `images/<stem>.jpg` with `boundaries_per_annotator/
    <stem>_<k>.png` (k = 0, 1, ...) or BSDS500's own `groundTruth/<stem>.mat`. Photos without
    boundaries are left out."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"edge data {path} does not exist")
    if not is_boundary_folder(path):
        raise ValueError(
            f"{path} is not a boundary dataset: expected images/ with boundaries_per_annotator/<stem>_<k>.png "
            "or BSDS500's groundTruth/<stem>.mat"
        )
    found: dict[str, list[Path]] = {}
    per_annotator = path / "boundaries_per_annotator"
    if per_annotator.is_dir():
        for p in per_annotator.glob("*.png"):
            stem, _, k = p.stem.rpartition("_")
            if stem and k.isdigit():
                found.setdefault(stem, []).append(p)
        for stem in found:
            found[stem].sort(key=lambda p: int(p.stem.rpartition("_")[2]))
    mats = path / "groundTruth"
    if mats.is_dir():
        for p in mats.glob("*.mat"):
            found.setdefault(p.stem, [p])
    out = []
    for stem in sorted(found):
        image = find_image(path / "images", stem)
        if image is not None:
            out.append(BoundaryImage(stem, image, found[stem]))
    if not out:
        raise ValueError(f"{path} has no photo with boundaries")
    return out


def _photo_and_boundaries(item: BoundaryImage) -> tuple[np.ndarray, list[np.ndarray]]:
    image = read_image(item.image_path)
    gts = item.boundaries()
    for g in gts:
        if g.shape != image.shape[:2]:
            raise ValueError(f"boundaries {g.shape} do not fit the image {image.shape[:2]}")
    return image, gts


EdgeMethod = tuple[str, Callable[[np.ndarray], np.ndarray]]


def edge_methods(predictor=None, baselines: tuple[str, ...] = ("canny", "sobel"), name: str | None = None,
                 points_per_side: int = 16) -> list[EdgeMethod]:
    """(name, image -> edge map) for the model (when given) and the classical rows."""
    from .edges import canny_edge_map, sam_edge_map, sobel_edge_map

    out: list[EdgeMethod] = []
    if predictor is not None:
        out.append((name or f"promptseg {predictor.model_type}",
                    lambda image: sam_edge_map(predictor, image, points_per_side=points_per_side)))
    classical = {"canny": ("Canny", canny_edge_map), "sobel": ("Sobel", sobel_edge_map)}
    for b in baselines:
        if b not in classical:
            raise ValueError(f"unknown edge baseline {b!r}: use canny or sobel")
        out.append(classical[b])
    return out


def evaluate_edges(images: list[BoundaryImage], methods: list[EdgeMethod], levels: int = 99,
                   advance: Callable[..., None] = lambda *a, **k: None, errors: list[str] | None = None,
                   keep_curves: bool = True) -> dict:
    """Each method's edge map of every photo, scored against every annotator (eval.boundaries);
    a photo that cannot be read, or whose boundaries do not fit it, is reported in `errors` and
    skipped. Returns the report: per method the dataset measures, the precision-recall curve and
    the time per photo (map and scoring apart), and per photo its own best F."""
    cut = thresholds(levels)
    counts: dict[str, list[np.ndarray]] = {m: [] for m, _ in methods}
    seconds: dict[str, list[float]] = {m: [] for m, _ in methods}
    scoring: dict[str, list[float]] = {m: [] for m, _ in methods}
    scored: list[str] = []
    for item, image, gts in readable(images, _photo_and_boundaries, advance, errors):
        for name, make in methods:
            t0 = time.perf_counter()
            edges = make(image)
            t1 = time.perf_counter()
            counts[name].append(image_counts(edges, gts, cut))
            seconds[name].append(t1 - t0)
            scoring[name].append(time.perf_counter() - t1)
        scored.append(item.stem)
        advance()
    report: dict = {"task": "edges", "images": len(scored), "thresholds": levels, "methods": {}, "quoted": QUOTED}
    if not scored:
        return report
    for name, _ in methods:
        s = edge_scores(counts[name], cut).as_dict()
        if not keep_curves:
            s.pop("curve")
        s["seconds_per_image"] = float(np.median(seconds[name]))
        s["scoring_seconds_per_image"] = float(np.median(scoring[name]))
        per_image = []
        for stem, c in zip(scored, counts[name]):
            one = edge_scores([c], cut)
            per_image.append({"image": stem, "best_F": one.ois, "ODS": one.ods, "AP": one.ap})
        s["per_image"] = per_image
        report["methods"][name] = s
    return report


def edge_table(report: dict) -> str:
    """Our rows, then the paper's rows marked as quoted."""
    rows = [(n, m) for n, m in report["methods"].items()] + list(report.get("quoted", {}).items())
    width = max([20, *(len(n) for n, _ in rows)])
    header = f"{'method':<{width}} " + " ".join(f"{c:>6}" for c in MEASURES) + f" {'s/photo':>8}"
    lines = [f"BSDS500-style edges: {report['images']} photos, {report['thresholds']} thresholds", header,
             "-" * len(header)]
    for name, m in rows:
        cells = " ".join(f"{m[c]:>6.3f}" if m.get(c) is not None else f"{'-':>6}" for c in MEASURES)
        t = m.get("seconds_per_image")
        lines.append(f"{name:<{width}} {cells} {(f'{t:8.2f}' if t is not None else ' ' * 7 + '-')}")
    return "\n".join(lines)


def draw_precision_recall(report: dict, path: str | Path) -> None:
    """The dataset-wide precision-recall curve of each method with its best measured point,
    iso-F lines, and the paper's quoted ODS figures in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    r = np.linspace(0.01, 1, 200)
    for f in np.arange(0.1, 1.0, 0.1):
        p = f * r / (2 * r - f)
        ok = (p > 0) & (p <= 1)
        ax.plot(r[ok], p[ok], color="0.85", lw=0.8, zorder=0)
        ax.annotate(f"F={f:.1f}", (r[ok][-1], p[ok][-1]), fontsize=6, color="0.6")
    for name, m in report["methods"].items():
        curve = m.get("curve")
        if not curve:
            continue
        p, r = np.asarray(curve["precision"]), np.asarray(curve["recall"])
        shown = r > 0  # thresholds above a map's strongest pixel predict nothing: no point on the curve
        (line,) = ax.plot(r[shown], p[shown], lw=1.8, label=f"{name}  ODS {m['ODS']:.3f}")
        best = int(np.argmax(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)))
        ax.plot(r[best], p[best], "o", color=line.get_color())
    for name, q in report.get("quoted", {}).items():
        ax.plot([], [], " ", label=f"{name}  ODS {q['ODS']:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision",
           title=f"Edges: {report['images']} photos, {report['thresholds']} thresholds")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
