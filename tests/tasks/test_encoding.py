"""design-bench's logits encoding (lightning_mbo.tasks.encoding, METHODS 1.1)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lightning_mbo.tasks.encoding import from_logits, to_logits, zscore_stats

LOG7 = math.log(7.0)


def test_log7_hand_values_for_four_classes():
    z = to_logits(torch.tensor([[0, 1, 2, 3]]), 4)
    assert z.shape == (1, 4, 3)
    assert z.dtype == torch.float32
    assert LOG7 == pytest.approx(1.9459101)
    expected = torch.tensor([
        [-LOG7, -LOG7, -LOG7],  # class 0: -log 7 in every slot
        [LOG7, 0.0, 0.0],       # class k > 0: log 7 in slot k - 1, 0 elsewhere
        [0.0, LOG7, 0.0],
        [0.0, 0.0, LOG7],
    ])
    torch.testing.assert_close(z[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 4, 20])
def test_general_formula_log_of_one_plus_1_5_c(num_classes):
    # p = 0.6 onehot + 0.4 / C: log(p_true / p_other) = log(1 + 1.5 C).
    z = to_logits(torch.tensor([[1]]), num_classes)
    assert z.shape == (1, 1, num_classes - 1)
    assert z[0, 0, 0].item() == pytest.approx(math.log(1 + 1.5 * num_classes), abs=1e-6)
    assert torch.count_nonzero(z[0, 0, 1:]) == 0


def test_round_trip_all_designs_of_length_four():
    designs = torch.tensor(list(itertools.product(range(4), repeat=4)))
    assert designs.shape == (256, 4)
    decoded = from_logits(to_logits(designs, 4))
    assert decoded.dtype == torch.int64
    assert torch.equal(decoded, designs)


@pytest.mark.parametrize(("num_classes", "length"), [(4, 8), (4, 10), (20, 237)])
def test_round_trip_random_designs(num_classes, length):
    x = torch.randint(0, num_classes, (64, length), generator=torch.Generator().manual_seed(num_classes))
    z = to_logits(x, num_classes)
    assert z.shape == (64, length, num_classes - 1)
    assert torch.equal(from_logits(z), x)


def test_int32_and_uint8_inputs_encode_like_int64():
    x = torch.tensor([[3, 0, 2, 1]])
    ref = to_logits(x, 4)
    assert torch.equal(to_logits(x.int(), 4), ref)
    assert torch.equal(to_logits(x.to(torch.uint8), 4), ref)


@pytest.mark.parametrize("bad", [[[0, 4]], [[-1, 0]]])
def test_out_of_range_designs_error(bad):
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        to_logits(torch.tensor(bad), 4)


def test_float_designs_error():
    with pytest.raises(TypeError, match="integer"):
        to_logits(torch.tensor([[0.0, 1.0]]), 4)


def test_zscore_stats_replaces_zero_std_by_one():
    a = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    mean, std = zscore_stats(a)
    assert torch.equal(mean, torch.tensor([2.0, 5.0]))
    assert torch.equal(std, torch.tensor([1.0, 1.0]))  # population std of (1, 3) is 1; of (5, 5) is 0 -> 1
    assert mean.dtype == std.dtype == torch.float32
    m, s = zscore_stats(torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64))  # scores: one column, scalar stats
    assert m.shape == () and float(m) == 4.0 and float(s) == pytest.approx((8 / 3) ** 0.5)


def test_integer_encoding_round_trips_and_keeps_the_sequence():
    from lightning_mbo.tasks import Task

    task = Task("TFBind8-Exact-v0", encoding="integers")
    assert task.input_dim == 8 and task.encoded_shape == (8,)
    designs = task.x[:5]
    features = task.encode(designs)
    assert features.dtype == torch.float32 and torch.equal(features, torch.as_tensor(designs).float())
    np.testing.assert_array_equal(task.decode(features + 0.3), designs)  # rounds
    assert Task("TFBind8-Exact-v0").input_dim == 24
    with pytest.raises(ValueError, match="encoding"):
        Task("TFBind8-Exact-v0", encoding="onehot")
