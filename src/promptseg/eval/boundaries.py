"""Boundary-detection scores as the BSDS500 benchmark defines them: ODS, OIS, AP and R50.

An edge map (probabilities in [0, 1]) is cut at evenly spaced thresholds; each binary map is
thinned to one-pixel-wide lines, and its pixels are matched one to one with each annotator's
boundary pixels, a pair being no farther apart than a tolerance (0.0075 of the image diagonal),
as many pairs as possible. A predicted pixel is correct when it matches some annotator's pixel;
recall counts the matched pixels of every annotator over all their pixels. From the counts:

- ODS: the best F-measure of the dataset-wide precision and recall over thresholds (refined by
  linear interpolation between neighbouring thresholds);
- OIS: the F-measure of the counts summed with every image at its own best measured threshold
  (not interpolated, so OIS can fall just below ODS for a map with few distinct levels);
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
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree
    except ImportError as err:  # pragma: no cover - the test venv has every extra
        raise ImportError("edge scoring needs scipy and scikit-image: pip install 'promptseg[eval]'") from err
    return csr_matrix, connected_components, cKDTree


def thresholds(n: int = THRESHOLDS) -> np.ndarray:
    """`n` thresholds evenly spaced strictly between 0 and 1."""
    return np.arange(1, n + 1) / (n + 1)


def _nearest_first(a: np.ndarray, b: np.ndarray, dist: np.ndarray, na: int, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """A maximal matching built nearest pairs first, in rounds: every free `a` node proposes to its
    nearest free `b` node, every proposed-to `b` node takes its nearest proposer. Returns the
    partner of each node (-1 when free)."""
    mate_a, mate_b = np.full(na, -1, np.int64), np.full(nb, -1, np.int64)
    order = np.lexsort((b, a, dist))
    a, b, dist = a[order], b[order], dist[order]
    while len(a):
        _, first = np.unique(a, return_index=True)  # each a node's nearest pair (pairs sorted by distance)
        pa, pb, pd = a[first], b[first], dist[first]
        order = np.lexsort((pa, pd))
        _, take = np.unique(pb[order], return_index=True)  # each b node's nearest proposer
        ta, tb = pa[order][take], pb[order][take]
        mate_a[ta], mate_b[tb] = tb, ta
        free = (mate_a[a] < 0) & (mate_b[b] < 0)
        a, b, dist = a[free], b[free], dist[free]
    return mate_a, mate_b


def _augment(start: list[int], end: list[int], heads: list[int], mate_a: list[int], mate_b: list[int],
             roots: list[int]) -> None:
    """Hopcroft-Karp phases from the free `a` nodes `roots`: `heads[start[u]:end[u]]` are the `b`
    nodes next to `u`. Grows the matching `mate_a`/`mate_b` in place to a maximum one. The
    depth-first search marks the nodes it has exhausted, so each phase reads every edge at most
    once (scipy 1.17's matcher does not, and takes exponential time on ladder-like graphs such
    as pairs of parallel edge lines)."""
    unreached = 1 << 62
    while True:
        roots = [u for u in roots if mate_a[u] < 0]
        if not roots:
            return
        level = dict.fromkeys(roots, 0)
        queue, head, shortest = list(roots), 0, unreached
        while head < len(queue):  # breadth first: the layers of alternating paths
            u = queue[head]
            head += 1
            lu = level[u]
            if lu >= shortest:
                continue
            for v in heads[start[u] : end[u]]:
                w = mate_b[v]
                if w < 0:
                    shortest = min(shortest, lu + 1)
                elif w not in level:
                    level[w] = lu + 1
                    queue.append(w)
        if shortest == unreached:
            return
        dead: set[int] = set()
        grown = 0
        for root in roots:  # depth first along the layers, disjoint shortest augmenting paths
            stack = [[root, start[root]]]
            while stack:
                top = stack[-1]
                u, i = top
                if i >= end[u]:
                    stack.pop()
                    dead.add(u)
                    continue
                top[1] = i + 1
                v = heads[i]
                w = mate_b[v]
                if w < 0:
                    if level[u] + 1 == shortest:
                        for uu, ii in stack:
                            vv = heads[ii - 1]
                            mate_a[uu], mate_b[vv] = vv, uu
                            dead.add(uu)
                        grown += 1
                        break
                elif w not in dead and level.get(w, unreached) == level[u] + 1:
                    stack.append([w, start[w]])
        if not grown:
            return


def match_points(p_pts: np.ndarray, g_pts: np.ndarray, max_dist: float, p_tree=None, g_tree=None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A maximum one-to-one matching of points `p_pts` (n, 2) and `g_pts` (m, 2), no pair farther
    apart than `max_dist`, near pairs preferred: a nearest-first matching completed by augmenting
    paths, only in the parts of the pair graph that still have free points on both sides.
    Returns each point's partner index (-1 when unmatched). Trees (scipy cKDTree of the points)
    may be passed in when the same points are matched several times."""
    csr_matrix, connected_components, cKDTree = _scipy()
    n, m = len(p_pts), len(g_pts)
    if n == 0 or m == 0:
        return np.full(n, -1, np.int64), np.full(m, -1, np.int64)
    p_tree = cKDTree(p_pts) if p_tree is None else p_tree
    g_tree = cKDTree(g_pts) if g_tree is None else g_tree
    pairs = p_tree.sparse_distance_matrix(g_tree, max_dist, output_type="ndarray")
    pi, gj, dist = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    mate_p, mate_g = _nearest_first(pi, gj, dist, n, m)
    if len(pi) == 0:
        return mate_p, mate_g
    # augmenting paths exist only inside a connected part of the pair graph that has a free point
    # on each side
    graph = csr_matrix((np.ones(len(pi), np.int8), (pi, gj + n)), shape=(n + m, n + m))
    _, part = connected_components(graph, directed=False)
    free_p = (mate_p < 0) & (np.bincount(pi, minlength=n) > 0)
    free_g = (mate_g < 0) & (np.bincount(gj, minlength=m) > 0)
    live = np.zeros(part.max() + 1, bool)
    live[np.intersect1d(part[:n][free_p], part[n:][free_g])] = True
    roots_p = np.flatnonzero(free_p & live[part[:n]])
    roots_g = np.flatnonzero(free_g & live[part[n:]])
    if len(roots_p) == 0:
        return mate_p, mate_g
    # search from the side with fewer free points
    if len(roots_g) <= len(roots_p):
        a, b, mate_a, mate_b, na, roots = gj, pi, mate_g, mate_p, m, roots_g
    else:
        a, b, mate_a, mate_b, na, roots = pi, gj, mate_p, mate_g, n, roots_p
    order = np.lexsort((dist, a))
    bounds = np.zeros(na + 1, np.int64)
    np.cumsum(np.bincount(a, minlength=na), out=bounds[1:])
    ma, mb = mate_a.tolist(), mate_b.tolist()
    _augment(bounds[:-1].tolist(), bounds[1:].tolist(), b[order].tolist(), ma, mb, roots.tolist())
    mate_a[:], mate_b[:] = ma, mb
    return mate_p, mate_g


def match_boundaries(pred: np.ndarray, gt: np.ndarray, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Matches the boundary pixels of `pred` and `gt` (bool, same shape) one to one, no pair
    farther apart than `max_dist` pixels, as many pairs as possible (`match_points`). Returns the
    matched pixels of each, as bool maps."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"edge map {pred.shape} and boundaries {gt.shape} differ in size")
    p_pts, g_pts = np.argwhere(pred), np.argwhere(gt)
    mate_p, mate_g = match_points(p_pts, g_pts, max_dist)
    pred_hit, gt_hit = np.zeros(pred.shape, bool), np.zeros(gt.shape, bool)
    pred_hit[tuple(p_pts[mate_p >= 0].T)] = True
    gt_hit[tuple(g_pts[mate_g >= 0].T)] = True
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
    _, _, cKDTree = _scipy()
    gts = [np.asarray(g, bool) for g in annotators]
    for g in gts:
        if g.shape != edges.shape:
            raise ValueError(f"edge map {edges.shape} and boundaries {g.shape} differ in size")
    g_pts = [np.argwhere(g) for g in gts]
    g_trees = [cKDTree(p) if len(p) else None for p in g_pts]
    total_gt = sum(len(p) for p in g_pts)
    if thin:
        from skimage.morphology import thin as thin_lines
    counts = np.zeros((len(levels), 4), dtype=np.int64)
    previous = None
    for i, level in enumerate(levels):
        binary = edges >= level
        if previous is not None and np.array_equal(binary, previous[0]):
            counts[i] = previous[1]  # the same pixels as at the last threshold: the same counts
            continue
        thinned = thin_lines(binary) if thin and binary.any() else binary
        p_pts = np.argwhere(thinned)
        p_tree = cKDTree(p_pts) if len(p_pts) else None
        correct = np.zeros(len(p_pts), bool)
        matched_gt = 0
        for pts, tree in zip(g_pts, g_trees):
            if p_tree is None or tree is None:
                continue
            mate_p, mate_g = match_points(p_pts, pts, max_dist, p_tree, tree)
            correct |= mate_p >= 0
            matched_gt += int((mate_g >= 0).sum())
        counts[i] = (correct.sum(), len(p_pts), matched_gt, total_gt)
        previous = (binary, counts[i].copy())
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
    f = _prf(stack)[2]
    best = f.shape[1] - 1 - f[:, ::-1].argmax(1)  # each image's own best threshold (the highest on a tie)
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
