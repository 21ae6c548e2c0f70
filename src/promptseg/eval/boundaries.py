"""Boundary-detection scores as the BSDS500 benchmark defines them: ODS, OIS, AP and R50.

An edge map (probabilities in [0, 1]) is cut at evenly spaced thresholds; each binary map is
thinned to one-pixel-wide lines, and its pixels are matched one to one with each annotator's
boundary pixels, a pair being no farther apart than a tolerance (0.0075 of the image diagonal),
as many pairs as possible. A predicted pixel is correct when it matches some annotator's pixel;
recall counts the matched pixels of every annotator over all their pixels. From the counts:

- ODS: the best F-measure of the dataset-wide precision and recall over thresholds (refined by
  linear interpolation between neighbouring thresholds);
- OIS: the F-measure of the counts summed with every image at its own best threshold;
- AP: the area under the dataset-wide precision-recall curve, precision read at recall
  0, 0.01, 0.02, ... within the recall the curve covers;
- R50: the recall at which the dataset-wide precision reaches 50 %.

Needs scipy and scikit-image (`pip install 'promptseg[eval]'`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TOLERANCE = 0.0075  # largest distance of a matched pair, as a fraction of the image diagonal
THRESHOLDS = 99  # evenly spaced in (0, 1)


def _scipy():
    try:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import maximum_bipartite_matching
        from scipy.spatial import cKDTree
    except ImportError as err:  # pragma: no cover - the test venv has every extra
        raise ImportError("edge scoring needs scipy and scikit-image: pip install 'promptseg[eval]'") from err
    return csr_matrix, maximum_bipartite_matching, cKDTree


def thresholds(n: int = THRESHOLDS) -> np.ndarray:
    """`n` thresholds evenly spaced strictly between 0 and 1."""
    return np.arange(1, n + 1) / (n + 1)


def match_boundaries(pred: np.ndarray, gt: np.ndarray, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Matches the boundary pixels of `pred` and `gt` (bool, same shape) one to one, no pair
    farther apart than `max_dist` pixels, as many pairs as possible. Returns the matched pixels of
    each, as bool maps."""
    csr_matrix, maximum_bipartite_matching, cKDTree = _scipy()
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"edge map {pred.shape} and boundaries {gt.shape} differ in size")
    pred_hit, gt_hit = np.zeros(pred.shape, bool), np.zeros(gt.shape, bool)
    p_pts, g_pts = np.argwhere(pred), np.argwhere(gt)
    if len(p_pts) == 0 or len(g_pts) == 0:
        return pred_hit, gt_hit
    pairs = cKDTree(p_pts).sparse_distance_matrix(cKDTree(g_pts), max_dist, output_type="ndarray")
    if len(pairs) == 0:
        return pred_hit, gt_hit
    graph = csr_matrix((np.ones(len(pairs), np.int8), (pairs["i"], pairs["j"])), shape=(len(p_pts), len(g_pts)))
    partner = maximum_bipartite_matching(graph, perm_type="column")  # per predicted pixel: its gt pixel or -1
    matched = np.flatnonzero(partner >= 0)
    pred_hit[tuple(p_pts[matched].T)] = True
    gt_hit[tuple(g_pts[partner[matched]].T)] = True
    return pred_hit, gt_hit


def image_counts(edges: np.ndarray, annotators: list[np.ndarray], levels: np.ndarray | None = None,
                 tolerance: float = TOLERANCE, thin: bool = True) -> np.ndarray:
    """One image's counts at each threshold: (levels, 4) int array of matched predicted pixels,
    predicted pixels, matched annotator pixels, annotator pixels (all annotators together).
    `edges` (H, W) in [0, 1]; `annotators` bool (H, W) boundary maps, one per annotator."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 2:
        raise ValueError(f"an edge map is (H, W), got shape {edges.shape}")
    if not annotators:
        raise ValueError("an image needs at least one annotator's boundaries")
    levels = thresholds() if levels is None else np.asarray(levels, dtype=np.float64)
    max_dist = tolerance * float(np.hypot(*edges.shape))
    gts = [np.asarray(g, bool) for g in annotators]
    total_gt = sum(int(g.sum()) for g in gts)
    if thin:
        from skimage.morphology import thin as thin_lines
    counts = np.zeros((len(levels), 4), dtype=np.int64)
    for i, level in enumerate(levels):
        binary = edges >= level
        if thin and binary.any():
            binary = thin_lines(binary)
        correct = np.zeros(binary.shape, bool)
        matched_gt = 0
        for g in gts:
            hit, g_hit = match_boundaries(binary, g, max_dist)
            correct |= hit
            matched_gt += int(g_hit.sum())
        counts[i] = (correct.sum(), binary.sum(), matched_gt, total_gt)
    return counts


def _prf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F from counts (..., 4); an empty prediction has precision 0 here, as
    in the benchmark (and F 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[..., 0] / np.maximum(counts[..., 1], 1)
    r = counts[..., 2] / np.maximum(counts[..., 3], 1)
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    return p, r, f


def _best_f(levels: np.ndarray, p: np.ndarray, r: np.ndarray) -> tuple[float, float, float, float]:
    """The best F along the curve, linearly interpolated between neighbouring thresholds:
    (F, threshold, precision, recall)."""
    best = (-1.0, 0.0, 0.0, 0.0)
    steps = np.linspace(0, 1, 101)
    for j in range(len(levels)):
        if j + 1 < len(levels):
            pt = p[j] * (1 - steps) + p[j + 1] * steps
            rt = r[j] * (1 - steps) + r[j + 1] * steps
            tt = levels[j] * (1 - steps) + levels[j + 1] * steps
        else:
            pt, rt, tt = p[j : j + 1], r[j : j + 1], levels[j : j + 1]
        ft = np.where(pt + rt > 0, 2 * pt * rt / np.maximum(pt + rt, 1e-300), 0.0)
        k = int(np.argmax(ft))
        if ft[k] > best[0]:
            best = (float(ft[k]), float(tt[k]), float(pt[k]), float(rt[k]))
    return best


@dataclass
class EdgeScores:
    ods: float
    ods_threshold: float
    ois: float
    ap: float
    r50: float
    levels: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)  # dataset-wide, per threshold
    recall: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {"ODS": self.ods, "ODS_threshold": self.ods_threshold, "OIS": self.ois, "AP": self.ap,
                "R50": self.r50, "curve": {"threshold": self.levels.tolist(), "precision": self.precision.tolist(),
                                           "recall": self.recall.tolist()}}


def edge_scores(per_image: list[np.ndarray], levels: np.ndarray | None = None) -> EdgeScores:
    """ODS, OIS, AP and R50 from each image's `image_counts` (same thresholds for all)."""
    if not per_image:
        raise ValueError("no images to score")
    stack = np.stack([np.asarray(c) for c in per_image])  # (images, levels, 4)
    levels = thresholds(stack.shape[1]) if levels is None else np.asarray(levels, dtype=np.float64)
    p, r, _ = _prf(stack.sum(0))
    ods, ods_t, _, _ = _best_f(levels, p, r)
    best = _prf(stack)[2].argmax(1)  # each image's own best threshold
    ois = float(_prf(stack[np.arange(len(stack)), best].sum(0))[2])
    return EdgeScores(ods, ods_t, ois, _average_precision(p, r), _recall_at_half_precision(p, r), levels, p, r)


def _average_precision(p: np.ndarray, r: np.ndarray) -> float:
    """Area under the precision-recall curve: precision read (linearly between measured points)
    at recall 0, 0.01, ... up to the highest recall measured, times 0.01."""
    order = np.argsort(r, kind="stable")
    rs, ps = r[order], p[order]
    rs, first = np.unique(rs, return_index=True)
    ps = ps[first]
    if len(rs) < 2:
        return 0.0
    grid = np.arange(0, rs[-1] + 1e-12, 0.01)
    grid = grid[grid >= rs[0]]
    return float(np.interp(grid, rs, ps).sum() * 0.01)


def _recall_at_half_precision(p: np.ndarray, r: np.ndarray) -> float:
    """The highest recall at which precision is at least 0.5, reading the curve linearly between
    thresholds (0 when precision never reaches 0.5)."""
    best = 0.0
    for j in range(len(p)):
        if p[j] >= 0.5:
            best = max(best, float(r[j]))
        if j + 1 < len(p) and (p[j] - 0.5) * (p[j + 1] - 0.5) < 0:  # the curve crosses 0.5 here
            s = (0.5 - p[j]) / (p[j + 1] - p[j])
            best = max(best, float(r[j] + s * (r[j + 1] - r[j])))
    return best
