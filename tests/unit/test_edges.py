"""The zero-shot edge protocol's parts: mask NMS, outer boundaries, edge thinning, and the whole
edge map of a real photo with the default model."""

from __future__ import annotations

import numpy as np
import pytest

from promptseg import Predictor, read_image, sample_image_path
from promptseg.checkpoints import default_model
from promptseg.eval.edges import edge_nms, mask_nms, outer_boundary, sam_edge_map


def test_mask_nms_drops_duplicates_of_a_better_mask():
    a = np.zeros((3, 40, 40), bool)
    a[0, 5:25, 5:25] = True
    a[1, 5:25, 5:24] = True  # nearly the first
    a[2, 30:38, 30:38] = True  # elsewhere
    assert mask_nms(a, np.array([0.5, 0.9, 0.1])).tolist() == [1, 2]
    assert mask_nms(a, np.array([0.5, 0.9, 0.1]), iou_threshold=0.99).tolist() == [1, 0, 2]


def test_outer_boundary_is_the_ring_outside_the_mask():
    m = np.zeros((20, 20), bool)
    m[5:10, 5:10] = True
    ring = outer_boundary(m)
    assert not (ring & m).any()
    assert ring.sum() == 7 * 7 - 5 * 5
    assert ring[4, 4] and ring[10, 10] and not ring[3, 3]


@pytest.mark.parametrize("direction", ["vertical", "diagonal"])
def test_edge_nms_thins_a_blurred_line_to_its_ridge(direction):
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    dist = xs - 32 if direction == "vertical" else (xs - ys) / np.sqrt(2)
    ridge = np.exp(-(dist**2) / (2 * 2.0**2))
    thin = edge_nms(ridge)
    inner = thin[8:-8, 8:-8]
    per_row = (inner > 0.05).sum(1)
    assert per_row.min() >= 1 and per_row.max() <= 2  # one pixel (two where the ridge falls between)
    kept = np.argwhere(thin[8:-8, 8:-8] > 0.05) + 8
    off = kept[:, 1] - 32 if direction == "vertical" else (kept[:, 1] - kept[:, 0]) / np.sqrt(2)
    assert np.abs(off).max() <= 1.0


def test_sam_edge_map_of_a_real_photo():
    predictor = Predictor(default_model())
    image = read_image(sample_image_path())
    edges = sam_edge_map(predictor, image, points_per_side=8)
    assert edges.shape == image.shape[:2] and edges.dtype == np.float32
    assert edges.min() >= 0 and edges.max() == pytest.approx(1.0)
    strong = edges > 0.2
    assert 0.001 < strong.mean() < 0.2
    # thinned: almost no 2x2 block of strong pixels
    blocks = strong[:-1, :-1] & strong[1:, :-1] & strong[:-1, 1:] & strong[1:, 1:]
    assert blocks.sum() < 0.05 * strong.sum()


def test_classical_maps_of_a_real_photo():
    import cv2

    from promptseg.eval.edges import canny_edge_map, sobel_edge_map

    image = read_image(sample_image_path())
    canny = canny_edge_map(image, levels=8)
    levels = np.unique(canny)
    assert len(levels) == 9 and levels[0] == 0  # 8 levels and no edge
    # cutting the map at a level gives Canny's own answer at that level's thresholds
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (0, 0), 1.0)
    g = grey.astype(np.float32)
    top = float(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)).max())
    high = top * 3 / 9
    own = cv2.Canny(grey, 0.4 * high, high, apertureSize=3, L2gradient=True) > 0
    assert np.array_equal(canny >= 3 / 9 - 1e-6, own)
    sobel = sobel_edge_map(image)
    assert sobel.shape == image.shape[:2] and 0 <= sobel.min() and sobel.max() <= 1
    assert 0.01 < (sobel > 0.05).mean() < 0.3
