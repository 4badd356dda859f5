"""Exact oracles: a lookup table over every row of a discrete task's full dataset (TFBind8, TFBind10)."""

from __future__ import annotations

import numpy as np

from lightning_mbo.tasks.oracles import DesignNotFoundError


class ExactOracle:
    """Lookup table over every row of a discrete task's full dataset.

    Designs are keyed by their base-C integer value; where a design occurs several times
    the LAST occurrence in shard order wins, as in design-bench's exact oracles. Lookup is
    one ``np.searchsorted`` over the sorted keys: no Python loop over designs.

    Args:
        x: ``(N, L)`` integer designs of the full dataset, in shard order.
        y: ``(N,)`` their scores.
        num_classes: alphabet size ``C``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
        if x.ndim != 2:
            raise ValueError(f"ExactOracle expects (N, L) integer designs, got shape {x.shape}")
        length = x.shape[1]
        if length * np.log2(num_classes) > 62:
            raise ValueError(f"designs of length {length} over {num_classes} classes do not fit an int64 key")
        self.num_classes = num_classes
        self.length = length
        keys = self._keys(x)
        # np.unique keeps the FIRST index of each key; on the reversed keys that is the last occurrence.
        rev_keys, rev_first = np.unique(keys[::-1], return_index=True)
        self._keys_sorted = rev_keys
        self._values = np.asarray(y, dtype=np.float32).reshape(-1)[::-1][rev_first]

    def _keys(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.length:
            raise ValueError(f"expected designs of shape (n, {self.length}), got {x.shape}")
        # Horner's rule column by column: no (n, L) int64 temporary (665 MB for TFBind10).
        keys = np.zeros(len(x), dtype=np.int64)
        for col in range(self.length):
            keys *= self.num_classes
            keys += x[:, col]
        return keys

    def __len__(self) -> int:
        return len(self._keys_sorted)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        # A fractional design must not be truncated to a neighbour (2.9 -> design 2).
        if not np.issubdtype(x.dtype, np.integer):
            if not np.array_equal(x, np.round(x)):
                raise DesignNotFoundError(f"designs must be integers in [0, {self.num_classes}), got fractions")
            x = x.astype(np.int64)  # integral floats (e.g. 2.0) are the designs they name
        if x.size and (x.min() < 0 or x.max() >= self.num_classes):
            raise DesignNotFoundError(f"designs must be integers in [0, {self.num_classes})")
        keys = self._keys(x)
        pos = np.searchsorted(self._keys_sorted, keys).clip(max=len(self._keys_sorted) - 1)
        missing = self._keys_sorted[pos] != keys
        if missing.any():
            rows = np.flatnonzero(missing)
            raise DesignNotFoundError(
                f"{len(rows)} designs are not in the oracle's table (first: {x[rows[0]].tolist()}); "
                "an exact oracle scores only designs of the full dataset"
            )
        return self._values[pos]
