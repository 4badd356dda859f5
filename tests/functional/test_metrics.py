"""Score percentiles (lightning_mbo.functional.metrics; design-bench's scoring protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_mbo.functional.metrics import score_percentiles


def test_hand_example():
    scores = np.array([0.5, 0.0, 0.9, 0.1, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])
    got = score_percentiles(scores)
    assert list(got) == ["score_100th", "score_80th", "score_50th"]
    # numpy's linear percentile of 0.0..0.9: positions 9, 7.2 and 4.5.
    assert got["score_100th"] == pytest.approx(0.9, abs=1e-12)
    assert got["score_80th"] == pytest.approx(0.72, abs=1e-12)
    assert got["score_50th"] == pytest.approx(0.45, abs=1e-12)
    assert all(isinstance(v, float) for v in got.values())


def test_against_numpy_on_128_candidates():
    scores = np.random.default_rng(0).uniform(-0.2, 1.3, size=(128, 1)).astype(np.float32)
    got = score_percentiles(scores, percentiles=(100, 80, 50, 0))
    flat = scores.astype(np.float64).ravel()
    for q in (100, 80, 50, 0):
        assert got[f"score_{q}th"] == pytest.approx(float(np.percentile(flat, q)), rel=1e-12)
    assert got["score_100th"] == pytest.approx(float(flat.max()))


def test_single_score_and_empty():
    assert score_percentiles(np.array([0.25])) == {"score_100th": 0.25, "score_80th": 0.25, "score_50th": 0.25}
    with pytest.raises(ValueError, match="no scores"):
        score_percentiles(np.array([]))


def test_spearman_hand_examples():
    from lightning_mbo.functional.metrics import spearman

    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 400.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # Ties share their average rank: ranks (0, 1.5, 1.5, 3) and (0, 1, 2, 3): rho = 4.5 / sqrt(4.5 * 5).
    assert spearman(np.array([1.0, 2.0, 2.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(
        4.5 / np.sqrt(4.5 * 5.0))
    # Monotone transforms leave it unchanged; a constant series has none.
    x, y = np.random.default_rng(0).normal(size=(2, 50))
    assert spearman(np.exp(x), y**3) == pytest.approx(spearman(x, y))
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
