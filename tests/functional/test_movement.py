"""Movement figures on hand examples: Hamming and L2 to the nearest start, rows found in the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_mbo.functional.movement import continuous_movement, discrete_movement, rows_in


def test_discrete_movement_counts_hamming_to_the_nearest_start() -> None:
    starts = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    final = np.array([[0, 0, 0, 0],    # a start itself: did not move
                      [1, 1, 1, 0],    # one base from start 1
                      [0, 1, 2, 3],    # nearest start (either) is 3 bases away
                      [3, 3, 3, 3]])   # 4 from both
    visible = np.array([[3, 3, 3, 3], [2, 2, 2, 2], [0, 0, 0, 0]])
    out = discrete_movement(final, starts, visible)
    assert out["moved_fraction"] == pytest.approx(3 / 4)
    assert out["hamming_mean"] == pytest.approx((0 + 1 + 3 + 4) / 4)
    assert out["in_data_fraction"] == pytest.approx(2 / 4)  # rows 0 and 3


def test_unmoved_search_reports_zero_movement() -> None:
    starts = np.random.default_rng(0).integers(0, 4, size=(128, 8))
    out = discrete_movement(starts.copy(), starts, starts)
    assert out == {"moved_fraction": 0.0, "hamming_mean": 0.0, "in_data_fraction": 1.0}


def test_rows_in_is_exact_on_a_large_table() -> None:
    rng = np.random.default_rng(1)
    table = rng.integers(0, 4, size=(200_000, 10)).astype(np.int32)
    present = table[[5, 77_777, 199_999]]
    absent = np.array([[4, 4, 4, 4, 4, 4, 4, 4, 4, 4]], dtype=np.int32)  # class 4 never occurs
    rows = np.concatenate([present, absent])
    np.testing.assert_array_equal(rows_in(rows, table), [True, True, True, False])
    brute = [(table == r).all(axis=1).any() for r in rows]
    np.testing.assert_array_equal(rows_in(rows, table), brute)


def test_rows_in_refuses_mismatched_widths() -> None:
    with pytest.raises(ValueError, match=r"\(n, L\)"):
        rows_in(np.zeros((2, 3), dtype=int), np.zeros((4, 5), dtype=int))


def test_continuous_movement_in_normalised_units() -> None:
    starts = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    final = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 1e-6]])
    visible = torch.tensor([[3.0, 4.0], [7.0, 7.0]])
    out = continuous_movement(final, starts, visible, tol=1e-4)
    assert out["moved_fraction"] == pytest.approx(1 / 3)  # row 2 is within tol of start 1
    assert out["l2_mean"] == pytest.approx((0 + 5 + 1e-6) / 3)
    assert out["in_data_fraction"] == pytest.approx(1 / 3)
