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


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks ``0 .. n-1`` of ``x``, tied values sharing their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (tie-averaged) ranks of
    ``a`` and ``b`` (both ``(n,)``); NaN when either is constant."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"spearman needs two equally long series of at least 2 values, got {a.shape} and {b.shape}")
    ra, rb = _average_ranks(a) - (len(a) - 1) / 2, _average_ranks(b) - (len(b) - 1) / 2
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")
