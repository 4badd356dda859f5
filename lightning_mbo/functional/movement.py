"""Did the search move? Distances from the final candidates to where search started and to the data.

A search can hand back designs that score well only because they are the starting designs
themselves (a step too small to change a single base, a searcher that returns data points). These
functions measure that, per candidate, so every result can say it:

- **discrete tasks** (designs of class integers ``(n, L)``): the Hamming distance (positions that
  differ) from each final design to the nearest starting design;
- **continuous tasks** (normalised features ``(n, D)``): the Euclidean distance in the normalised
  space to the nearest starting design;
- both: whether each final design is already a row of the visible dataset (exactly, for integer
  designs; within ``tol`` in the normalised space for continuous ones, since decoding a
  normalised design back to raw units is not bit-exact).

The nearest starting design, not the candidate's own: searchers that sample new designs (REINFORCE,
CbAS, MINs, BO-qEI) have no own start, and for searches that move each start (gradient ascent,
CMA-ES) the nearest start is at most as far as its own, so "moved" never overstates movement.

Plain numpy/torch, no Lightning.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["continuous_movement", "discrete_movement", "rows_in"]

#: Rows per chunk when comparing candidates against a large dataset (TFBind10 shows 4.1M rows).
_CHUNK = 1 << 20


def _row_hash(a: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of an integer array ``(n, L)`` -> ``(n,)`` uint64 (wrapping
    arithmetic with fixed odd multipliers; collisions are resolved by the exact check in :func:`rows_in`)."""
    weights = np.random.default_rng(0).integers(1, 2**63, size=a.shape[1], dtype=np.uint64) | np.uint64(1)
    out = np.empty(len(a), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(a), _CHUNK):
            block = a[lo:lo + _CHUNK].astype(np.int64).view(np.uint64)
            out[lo:lo + _CHUNK] = (block * weights).sum(axis=1, dtype=np.uint64)
    return out


def rows_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Whether each integer row of ``rows`` ``(n, L)`` occurs in ``table`` ``(N, L)`` -> ``(n,)`` bool.

    Exact: rows whose hash occurs in the table are confirmed by comparing them with the table rows
    of the same hash.
    """
    rows, table = np.asarray(rows), np.asarray(table)
    if rows.ndim != 2 or table.ndim != 2 or rows.shape[1] != table.shape[1]:
        raise ValueError(f"rows_in compares (n, L) with (N, L) arrays, got {rows.shape} and {table.shape}")
    if len(rows) == 0 or len(table) == 0:
        return np.zeros(len(rows), dtype=bool)
    h_rows, h_table = _row_hash(rows), _row_hash(table)
    candidates = np.isin(h_rows, h_table)
    out = np.zeros(len(rows), dtype=bool)
    for i in np.flatnonzero(candidates):
        same_hash = table[h_table == h_rows[i]]
        out[i] = bool((same_hash == rows[i]).all(axis=1).any())
    return out


def discrete_movement(final: np.ndarray, starts: np.ndarray, visible: np.ndarray) -> dict[str, float]:
    """Movement of integer designs.

    Args:
        final: ``(n, L)`` the final designs (class integers).
        starts: ``(m, L)`` the starting designs.
        visible: ``(N, L)`` the visible dataset.

    Returns:
        ``moved_fraction`` (share of final designs that are no starting design), ``hamming_mean``
        (mean over final designs of the Hamming distance to the nearest start, in positions) and
        ``in_data_fraction`` (share of final designs that are rows of ``visible``).
    """
    final, starts = np.asarray(final), np.asarray(starts)
    final2, starts2 = final.reshape(len(final), -1), starts.reshape(len(starts), -1)
    # (n, m) Hamming distances; n, m are the 128 candidates and starts, so this is small.
    hamming = (final2[:, None, :] != starts2[None, :, :]).sum(-1).min(axis=1)
    in_data = rows_in(final2, np.asarray(visible).reshape(len(visible), -1))
    return {"moved_fraction": float((hamming > 0).mean()), "hamming_mean": float(hamming.mean()),
            "in_data_fraction": float(in_data.mean())}


def continuous_movement(final: torch.Tensor, starts: torch.Tensor, visible: torch.Tensor,
                        tol: float = 1e-4) -> dict[str, float]:
    """Movement of continuous designs in the normalised space.

    Args:
        final: ``(n, D)`` the final designs, normalised.
        starts: ``(m, D)`` the starting designs, normalised.
        visible: ``(N, D)`` the visible dataset, normalised.
        tol: distance at or below which two designs count as the same (decoding to raw units and
            back is not bit-exact).

    Returns:
        ``moved_fraction`` (share of final designs farther than ``tol`` from every start),
        ``l2_mean`` (mean Euclidean distance to the nearest start) and ``in_data_fraction`` (share
        within ``tol`` of a visible row).
    """
    final, starts, visible = (t.detach().double().reshape(len(t), -1) for t in (final, starts, visible))
    to_start = torch.cdist(final, starts).min(dim=1).values
    to_data = torch.full((len(final),), float("inf"), dtype=torch.float64)
    for lo in range(0, len(visible), _CHUNK // 16):
        to_data = torch.minimum(to_data, torch.cdist(final, visible[lo:lo + _CHUNK // 16]).min(dim=1).values)
    return {"moved_fraction": float((to_start > tol).double().mean()), "l2_mean": float(to_start.mean()),
            "in_data_fraction": float((to_data <= tol).double().mean())}
