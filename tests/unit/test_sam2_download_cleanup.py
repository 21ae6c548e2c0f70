"""SAM 2 weights' download without a published checksum, and SAM 2's low-res clean-up."""

from __future__ import annotations

import numpy as np
import pytest

from promptseg import checkpoints
from promptseg.weights import REGISTRY
from server_helpers import FileServer

# --- download without a published checksum -----------------------------------------------


def test_sam2_download_checks_length_and_reports_the_hash(tmp_path, monkeypatch, capsys):
    import hashlib

    entry = REGISTRY["sam2.1_hiera_t.sav"]
    assert entry.size is None and entry.sha256 is None and entry.url.endswith("/092824/sam2.1_hiera_tiny.pt")
    data = bytes(range(256)) * 9000
    cut = 700_001
    with FileServer(data, cut_first_at=cut) as server:
        with pytest.raises(ConnectionError, match="resume"):
            checkpoints.download("sam2.1_hiera_t", dest_dir=tmp_path, url=server.url, quiet=True)
        part = tmp_path / "sam2.1_hiera_tiny.pt.part"
        assert part.stat().st_size == cut
        path = checkpoints.download("sam2.1_hiera_t", dest_dir=tmp_path, url=server.url)
    assert server.requests[-1] == f"bytes={cut}-"
    assert path.read_bytes() == data and not part.exists()
    assert hashlib.sha256(data).hexdigest() in capsys.readouterr().err


# --- SAM 2's clean-up of low-res logits ----------------------------------------------------


def _small_regions(region: np.ndarray, limit: int) -> np.ndarray:
    """Pixels of 8-connected regions of at most `limit` pixels, by scikit-image."""
    from skimage.measure import label

    labels = label(region, connectivity=2)
    sizes = np.bincount(labels.ravel())
    small = (sizes <= limit) & (np.arange(len(sizes)) > 0)
    return small[labels]


def test_fill_holes_and_sprinkles_as_an_independent_labelling():
    from promptseg.transforms import fill_holes_and_sprinkles

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 64, 64)).astype(np.float32) * 4
    out = fill_holes_and_sprinkles(logits, 0.5, max_hole_area=6, max_sprinkle_area=4)
    for idx in np.ndindex(2, 3):
        x = logits[idx]
        holes, specks = _small_regions(x <= 0.5, 6), _small_regions(x > 0.5, 4)
        expected = np.where(holes, 10.5, np.where(specks, -9.5, x))
        np.testing.assert_array_equal(out[idx], expected)
        assert holes.any() and specks.any()
    np.testing.assert_array_equal(fill_holes_and_sprinkles(logits, 0.0), logits)
