"""Intervals, tests, IQM, probability of improvement and mean ranks on hand-made runs with known answers
(lightning_mbo.statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_mbo.statistics import (
    Interval,
    difference_of_means,
    iqm,
    mean_ranks,
    probability_of_improvement,
    verdict,
)

RUNS = [0.90, 0.92, 0.95]


def test_identical_runs_are_unchanged_with_p_one() -> None:
    d = difference_of_means(RUNS, RUNS)
    assert d.interval.estimate == 0.0
    assert d.interval.low < 0 < d.interval.high  # the runs differ, so resamples do too
    assert d.p_value == 1.0 and d.verdict == "unchanged"
    constant = difference_of_means([0.925] * 3, [0.925] * 3)  # zero spread on both sides: t would be 0/0
    assert (constant.interval.low, constant.interval.high, constant.p_value, constant.verdict) == (
        0.0, 0.0, 1.0, "unchanged")


@pytest.mark.parametrize(("shift", "expected"), [(0.1, "improved"), (-0.1, "decreased")])
def test_a_shifted_copy_excludes_zero_on_the_side_of_its_sign(shift: float, expected: str) -> None:
    d = difference_of_means(RUNS, [r + shift for r in RUNS])
    assert d.interval.estimate == pytest.approx(shift)
    # the shift (0.1) is larger than the spread (0.05): every resample's difference has the shift's sign
    assert (d.interval.low > 0) if shift > 0 else (d.interval.high < 0)
    assert d.interval.low <= shift <= d.interval.high
    assert d.verdict == expected
    # exact permutation test: of the 20 splits of 6 runs into 3 + 3, only the observed one and its mirror
    # are as far from 0, so p = 2 / 20; three runs a side cannot go lower
    assert d.p_value == pytest.approx(0.1)
    assert (d.n_base, d.n_other) == (3, 3) and d.base_mean == pytest.approx(np.mean(RUNS))


def test_a_zero_or_negative_baseline_mean_is_compared_by_difference() -> None:
    zero = difference_of_means([-0.01, 0.0, 0.01], [0.49, 0.5, 0.51])
    assert zero.base_mean == pytest.approx(0.0) and zero.interval.estimate == pytest.approx(0.5)
    assert zero.verdict == "improved"
    negative = difference_of_means([-0.3, -0.2, -0.25], [-0.4, -0.3, -0.35])
    assert negative.interval.estimate == pytest.approx(-0.1) and negative.verdict == "decreased"


def test_fewer_than_two_runs_a_side_is_not_available() -> None:
    for base, other in [([0.9], RUNS), (RUNS, [0.95]), ([0.9], [0.95])]:
        d = difference_of_means(base, other)
        assert d.verdict == "n/a" and d.p_value is None and not d.interval.available
        assert d.interval.estimate == pytest.approx(np.mean(other) - np.mean(base))
    with pytest.raises(ValueError, match="no runs"):
        difference_of_means([], RUNS)


def test_a_score_that_is_not_finite_is_refused() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        difference_of_means([0.9, float("nan"), 0.8], RUNS)


def test_a_fixed_seed_gives_the_same_interval_and_p_and_another_seed_another_interval() -> None:
    base, other = [0.868, 0.82, 0.92, 0.85], [0.922, 0.9, 0.96, 0.87]
    first, again = difference_of_means(base, other), difference_of_means(base, other)
    assert first == again
    assert difference_of_means(base, other, seed=1).interval != first.interval
    assert iqm([base, other]) == iqm([base, other])
    assert probability_of_improvement([other], [base]) == probability_of_improvement([other], [base])


def test_the_verdict_reads_the_interval_and_ignores_rounding() -> None:
    assert verdict(Interval(0.02, 0.01, 0.03)) == "improved"
    assert verdict(Interval(-0.02, -0.03, -0.01)) == "decreased"
    assert verdict(Interval(0.0, 0.0, 0.01)) == "unchanged"  # an end on 0 counts as containing it
    assert verdict(Interval(0.0, 1e-17, 2e-17)) == "unchanged"  # last-bit noise of equal means
    assert verdict(Interval(0.02)) == "n/a"


def test_iqm_is_the_quarter_trimmed_mean_and_its_bootstrap_keeps_tasks() -> None:
    assert iqm([[1.0, 2.0, 3.0, 4.0]]).estimate == pytest.approx(2.5)  # mean of the middle two
    assert iqm([[1.0, 2.0, 3.0]]).estimate == pytest.approx(2.0)  # under 4 scores: nothing cut, the mean
    # two tasks, each constant: a stratified resample keeps 3 zeros and 3 ones, so every resample's IQM is
    # that of [0, 0, 0, 1, 1, 1] with one cut at each end; pooled resampling would vary from 0 to 1
    pooled = iqm([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert (pooled.estimate, pooled.low, pooled.high) == (0.5, 0.5, 0.5)
    spread = iqm([RUNS, [r + 0.01 for r in RUNS]])
    assert spread.low < spread.estimate < spread.high
    single = iqm([[0.9], [0.8, 0.85]])  # a task with one run: nothing to resample
    assert single.estimate == pytest.approx(0.85) and not single.available


def test_probability_of_improvement_counts_pairs_and_half_ties() -> None:
    above = probability_of_improvement([[0.9, 0.95, 0.99]], [[0.5, 0.6, 0.7]])
    assert (above.estimate, above.low, above.high) == (1.0, 1.0, 1.0)
    assert probability_of_improvement([RUNS], [RUNS]).estimate == pytest.approx(0.5)
    # 1 vs 2: lower twice; 3 vs 2: higher twice -> 2 of 4 pairs
    assert probability_of_improvement([[1.0, 3.0]], [[2.0, 2.0]]).estimate == pytest.approx(0.5)
    # ties count one half: [2, 3] vs [2, 2] -> 0.5 + 0.5 + 1 + 1 of 4
    assert probability_of_improvement([[2.0, 3.0]], [[2.0, 2.0]]).estimate == pytest.approx(0.75)
    # averaged over tasks, each resampled on its own: always better on one, always worse on the other
    both = probability_of_improvement([[0.9, 0.95], [0.1, 0.2]], [[0.5, 0.6], [0.5, 0.6]])
    assert (both.estimate, both.low, both.high) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="same order"):
        probability_of_improvement([RUNS, RUNS], [RUNS])


def test_mean_ranks_share_ties_and_count_only_tasks_run() -> None:
    ranks = mean_ranks({"A": {"a": 0.9, "b": 0.8, "c": 0.8}, "B": {"a": 0.1, "b": 0.5}})
    assert ranks == {"a": (1.5, 2), "b": (1.75, 2), "c": (2.5, 1)}
