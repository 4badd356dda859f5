"""Scoring: the 100th/80th/50th percentiles of the final designs' normalised oracle scores (design-bench)."""

from __future__ import annotations

import numpy as np

PERCENTILES = (100, 80, 50)


def score_percentiles(normalized: np.ndarray, percentiles: tuple[int, ...] = PERCENTILES) -> dict[str, float]:
    """The ``q``-th percentiles of the normalised scores of the final designs.

    Returns:
        ``{"score_100th": ..., "score_80th": ..., "score_50th": ...}`` (numpy's linear percentile).
    """
    normalized = np.asarray(normalized, dtype=np.float64).reshape(-1)
    if normalized.size == 0:
        raise ValueError("no scores to summarise")
    return {f"score_{q}th": float(np.percentile(normalized, q)) for q in percentiles}
