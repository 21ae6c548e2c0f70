"""The BSDS500 boundary measures on constructed cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from promptseg.eval.boundaries import edge_scores, image_counts, match_boundaries, match_points, thresholds

H, W = 321, 481  # a BSDS photo: the tolerance is 0.0075 x 578 = 4.3 px


def _square(shift: int = 0, size: int = 150) -> np.ndarray:
    """The four sides of a square, one pixel wide, moved `shift` px right; the corners are left
    open so that thinning (which trims a corner's inner pixel) leaves the map as it is."""
    m = np.zeros((H, W), bool)
    y0, x0 = 80, 150 + shift
    m[y0, x0 + 2 : x0 + size - 2] = m[y0 + size - 1, x0 + 2 : x0 + size - 2] = True
    m[y0 + 2 : y0 + size - 2, x0] = m[y0 + 2 : y0 + size - 2, x0 + size - 1] = True
    return m


def _prf(counts):
    c = counts.astype(float)
    return c[:, 0] / np.maximum(c[:, 1], 1), c[:, 2] / np.maximum(c[:, 3], 1)


def test_a_perfect_edge_map_scores_one():
    gt = _square()
    counts = image_counts(gt.astype(float), [gt])
    p, r = _prf(counts)
    assert np.all(p == 1) and np.all(r == 1)
    s = edge_scores([counts])
    assert s.ods == pytest.approx(1) and s.ois == pytest.approx(1) and s.r50 == pytest.approx(1)


@pytest.mark.parametrize("shift, matched", [(3, True), (4, True), (6, False)])
def test_a_shift_within_the_tolerance_matches_and_beyond_it_does_not(shift, matched):
    gt, pred = _square(), _square(shift)
    hit, g_hit = match_boundaries(pred, gt, 0.0075 * np.hypot(H, W))
    # the top and bottom sides overlap along the shift whatever it is; the left and right sides
    # match only within the tolerance
    left_side = pred[:, 150 + shift].nonzero()[0]
    assert hit[left_side, 150 + shift].all() == matched
    assert hit.sum() == g_hit.sum()  # one to one
    if not matched:
        assert hit.sum() < pred.sum()


def test_an_empty_map_scores_zero():
    gt = _square()
    counts = image_counts(np.zeros((H, W)), [gt])
    assert counts[:, 0].sum() == counts[:, 1].sum() == counts[:, 2].sum() == 0
    s = edge_scores([counts])
    assert s.ods == 0 and s.ois == 0 and s.ap == 0 and s.r50 == 0


def test_extra_edges_cost_precision_only():
    gt = _square()
    extra = np.zeros((H, W), bool)
    extra[300, 20:120] = True  # 100 px far from every boundary
    counts = image_counts((gt | extra).astype(float), [gt])
    p, r = _prf(counts)
    assert np.allclose(r, 1)
    assert np.allclose(p, gt.sum() / (gt.sum() + 100))


def test_matching_is_one_to_one():
    gt = np.zeros((H, W), bool)
    gt[100, 100:300] = True
    pred = np.zeros((H, W), bool)
    pred[99, 100:300] = pred[101, 100:300] = True  # two lines for one: only one can match
    hit, g_hit = match_boundaries(pred, gt, 4.3)
    assert hit.sum() == g_hit.sum() == 200


def test_every_annotator_counts_for_recall_and_any_for_precision():
    a, b = _square(), np.zeros((H, W), bool)
    b[300, 20:120] = True  # the second annotator drew a line the prediction misses
    counts = image_counts(a.astype(float), [a, b])
    p, r = _prf(counts)
    assert np.allclose(p, 1)  # every predicted pixel matches the first annotator
    assert np.allclose(r, a.sum() / (a.sum() + 100))


def test_thresholds_sweep_the_probabilities():
    gt = _square()
    faint = np.zeros((H, W), bool)
    faint[300, 20:120] = True
    edges = gt * 0.9 + faint * 0.3  # the wrong line is weaker
    counts = image_counts(edges, [gt], levels=thresholds())
    p, r = _prf(counts)
    levels = thresholds()
    assert np.allclose(p[levels <= 0.3], gt.sum() / (gt.sum() + 100))
    assert np.allclose(p[(levels > 0.3) & (levels <= 0.9)], 1)
    assert np.all(counts[levels > 0.9, 1] == 0)  # nothing predicted above 0.9
    s = edge_scores([counts])
    assert s.ods == pytest.approx(1) and 0.3 < s.ods_threshold <= 0.9


def test_ois_takes_each_image_at_its_own_best_threshold():
    gt = _square()
    faint = np.zeros((H, W), bool)
    faint[300, 20:120] = True
    one = image_counts(gt * 0.8 + faint * 0.6, [gt])  # best above 0.6
    two = image_counts(gt * 0.4 + faint * 0.2, [gt])  # best in (0.2, 0.4]
    s = edge_scores([one, two])
    assert s.ois == pytest.approx(1)
    assert s.ods < 1  # one threshold cannot serve both


def test_ap_and_r50_of_a_known_curve():
    # counts (matched pred, pred, matched gt, gt) giving precision 1, 0.75, 0.5, 0.25 at recall 0.2, 0.4, 0.6, 0.8
    counts = np.array([[100, 100, 20, 100], [75, 100, 40, 100], [50, 100, 60, 100], [25, 100, 80, 100]])
    s = edge_scores([counts], levels=np.array([0.8, 0.6, 0.4, 0.2]))
    assert s.r50 == pytest.approx(0.6)
    # precision falls linearly from 1 at recall 0.2 to 0.25 at 0.8: p = 1.25 - 1.25 r
    grid = np.arange(0.2, 0.8 + 1e-9, 0.01)
    assert s.ap == pytest.approx(float((1.25 - 1.25 * grid).sum() * 0.01), rel=1e-6)
    # the best measured F (0.545), or a little above it between two thresholds
    measured = max(2 * p * r / (p + r) for p, r in [(1, .2), (.75, .4), (.5, .6), (.25, .8)])
    assert measured <= s.ods <= measured + 0.02


def _maximum_by_networkx(p_pts, g_pts, max_dist) -> int:
    """The size of a maximum matching, by networkx's Hopcroft-Karp (an independent oracle)."""
    import networkx as nx
    from scipy.spatial import cKDTree

    pairs = cKDTree(p_pts).sparse_distance_matrix(cKDTree(g_pts), max_dist, output_type="ndarray")
    graph = nx.Graph()
    graph.add_nodes_from(range(len(p_pts)))
    graph.add_edges_from((int(i), len(p_pts) + int(j)) for i, j in zip(pairs["i"], pairs["j"]))
    found = nx.bipartite.hopcroft_karp_matching(graph, top_nodes=range(len(p_pts)))
    return sum(1 for u in range(len(p_pts)) if u in found)


def _check_matching(p_pts, g_pts, max_dist, mate_p, mate_g):
    matched = np.flatnonzero(mate_p >= 0)
    assert np.array_equal(mate_g[mate_p[matched]], matched)  # partners agree: one to one
    assert (mate_g >= 0).sum() == len(matched)
    assert np.all(np.hypot(*(p_pts[matched] - g_pts[mate_p[matched]]).T) <= max_dist + 1e-9)
    assert len(matched) == _maximum_by_networkx(p_pts, g_pts, max_dist)


@pytest.mark.parametrize("seed", range(6))
def test_the_matching_is_maximum_on_random_pixel_sets(seed):
    rng = np.random.default_rng(seed)
    # clustered pixels, so that the nearest-first pass leaves free pixels that need augmenting paths
    centres = rng.integers(0, 60, (12, 2))
    p_pts = np.unique(centres[rng.integers(0, 12, 400)] + rng.integers(-4, 5, (400, 2)), axis=0)
    g_pts = np.unique(centres[rng.integers(0, 12, 300)] + rng.integers(-4, 5, (300, 2)), axis=0)
    mate_p, mate_g = match_points(p_pts, g_pts, 2.5)
    _check_matching(p_pts, g_pts, 2.5, mate_p, mate_g)


def test_a_ladder_of_parallel_lines_is_matched_whole_and_quickly():
    # two predicted lines beside two annotated lines, in a graph of many layers, where scipy
    # 1.17's maximum_bipartite_matching takes exponential time; here it is one pass
    rows = np.arange(2000)
    p_pts = np.concatenate([np.stack([rows, np.full(2000, 10)], 1), np.stack([rows, np.full(2000, 12)], 1)])
    g_pts = np.concatenate([np.stack([rows, np.full(2000, 11)], 1), np.stack([rows[::2], np.full(1000, 13)], 1)])
    mate_p, mate_g = match_points(p_pts, g_pts, 2.3)
    assert (mate_p >= 0).sum() == 3000
    _check_matching(p_pts, g_pts, 2.3, mate_p, mate_g)


def test_empty_sides_match_nothing():
    mate_p, mate_g = match_points(np.zeros((0, 2)), np.array([[1, 1]]), 3.0)
    assert len(mate_p) == 0 and mate_g.tolist() == [-1]
    mate_p, mate_g = match_points(np.array([[1, 1]]), np.array([[9, 9]]), 3.0)
    assert mate_p.tolist() == [-1] and mate_g.tolist() == [-1]
