"""TFBind8, shipped inside the package: design-bench's numbers (METHODS 1.1, 1.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_mbo.tasks import DesignNotFoundError, Task


@pytest.fixture(scope="module")
def task() -> Task:
    return Task("TFBind8-Exact-v0")


def test_full_dataset(task):
    assert task.x_all.shape == (65_792, 8)
    assert task.x_all.dtype == np.int32
    assert task.y_all.shape == (65_792,)
    assert task.y_all.dtype == np.float32
    assert task.x_all.min() == 0 and task.x_all.max() == 3
    assert task.y_all.min() == 0.0 and task.y_all.max() == 1.0


def test_visible_split(task):
    # Inclusive of the four rows tied at the median: a strict `<` would keep 32,894.
    assert len(task.x) == len(task.y) == len(task.visible) == 32_898
    median = np.percentile(task.y_all, 50)
    assert (task.y_all == median).sum() == 4
    assert task.y.max() == np.float32(0.43929616)
    assert task.y.max() == median
    np.testing.assert_array_equal(task.x, task.x_all[task.visible])


def test_best_visible(task):
    assert task.best_visible == pytest.approx(0.43929616, abs=1e-7)
    assert round(task.best_visible, 3) == task.spec.best_visible == 0.439


def test_exact_oracle_holds_every_8mer_once(task):
    assert len(task.oracle) == 65_536 == 4**8


def test_top_128_visible_designs_score_their_y(task):
    x, y = task.top_k(128)
    assert x.shape == (128, 8)
    assert np.all(np.diff(y) <= 0)
    assert y[0] == np.float32(0.43929616)
    # No visible row outside the top 128 beats the 128th.
    assert (task.y > y[-1]).sum() < 128
    np.testing.assert_array_equal(task.score(x), y)


def test_oracle_scores_hidden_designs_too(task):
    best = np.argmax(task.y_all)
    assert task.score(task.x_all[best:best + 1])[0] == 1.0


def test_oracle_rejects_designs_outside_the_alphabet(task):
    with pytest.raises(DesignNotFoundError):
        task.score(np.full((1, 8), 4, dtype=np.int32))


def test_oracle_rejects_fractional_designs(task):
    # Not truncated to a neighbouring design (0.7 -> 0, 2.9 -> 2).
    with pytest.raises(DesignNotFoundError, match="got fractions"):
        task.score(np.full((1, 8), 2.9))
    # Integral floats are the same designs as their integers.
    assert task.score(np.full((1, 8), 2.0))[0] == task.score(np.full((1, 8), 2, dtype=np.int32))[0]


def test_score_checks_the_design_shape(task):
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        task.score(np.zeros((2, 7), dtype=np.int32))


def test_encoding_shapes_and_round_trip(task):
    assert task.design_shape == (8,)
    assert task.encoded_shape == (8, 3)
    assert task.input_dim == 24
    z = task.encode(task.x[:100])
    assert z.shape == (100, 24) and z.dtype == torch.float32
    decoded = task.decode(z)
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, task.x[:100])


def test_normalised_score_is_identity_for_0_1_range(task):
    np.testing.assert_allclose(task.normalize_score(np.array([0.0, 0.43929616, 1.0])), [0.0, 0.43929616, 1.0],
                               rtol=0, atol=1e-12)
