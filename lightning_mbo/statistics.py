"""Is a difference between two methods real? Intervals and tests over runs (numpy and scipy only).

A table of means over a few seeds cannot say whether a change is real: with three runs a side the
spread of one method (up to 0.08 at the 100th percentile on TFBind8) is as large as most changes.
Agarwal, Schwarzer, Castro, Courville and Bellemare, "Deep reinforcement learning at the edge of the
statistical precipice" (NeurIPS 2021, arXiv:2108.13264) recommend reporting interval estimates
instead of point estimates, and robust aggregates over tasks. This module computes, from per-run
scores:

- :func:`difference_of_means`: for one cell (a task, two methods, one percentile), the difference of
  the means ``mean(other) - mean(base)`` with a percentile bootstrap interval (each side resampled
  on its own, Efron and Tibshirani 1993, ch. 13), a two-sided permutation test of the same
  difference, and the verdict read off the interval: ``improved`` when it lies above 0,
  ``decreased`` when below, ``unchanged`` when it contains 0, ``n/a`` with fewer than 2 runs a side.
- :func:`iqm`: the interquartile mean (the mean of the middle 50% of all runs pooled over tasks,
  ``scipy.stats.trim_mean(x, 0.25)``) with a stratified bootstrap interval: runs are resampled
  within each task (stratum), tasks are kept (Agarwal et al., Section 4).
- :func:`probability_of_improvement`: ``P(X > Y)`` averaged over tasks, each task's the Mann-Whitney
  ``U / (n m)`` (a tie counts one half), with its stratified bootstrap interval (Agarwal et al.,
  Section 4.3).
- :func:`mean_ranks`: each method's rank by mean score on each task (1 = best, ties share the mean
  rank), averaged over the tasks it ran on, as offline MBO papers report it (e.g. BDI and
  Tri-mentoring, Chen et al., NeurIPS 2022 and 2023).

The test is a permutation test, not Welch's t: under the null hypothesis that a method's runs and
its rival's come from one distribution, every split of the pooled runs into two groups of the same
sizes is equally likely, so the p-value (the share of splits whose difference of means is at least
as far from 0 as the observed one) is exact, enumerated where there are at most ``resamples``
splits and Monte Carlo otherwise, with no assumption on the scores' distribution. Welch's t assumes
normal scores, which three runs cannot check, and the 100th-percentile score is a maximum over a
discrete oracle: runs tie and cells have zero spread, where t is undefined or infinite. The price
is that few runs cannot reach a small p: with 3 runs a side there are 20 splits and the smallest
two-sided p is 0.1, which is what three seeds can show without an assumption.

The verdict is the interval's, not the test's. A percentile bootstrap interval over three runs is
narrower than its nominal 95% (each side has only 10 distinct resamples), so an interval that just
excludes 0 next to a large p is a weak result; the two together say how much to trust a change.

rliable, the library of Agarwal et al., computes the same IQM (``scipy.stats.trim_mean``) and
probability of improvement (``scipy.stats.mannwhitneyu``); its resampling goes through ``arch``,
whose versions it accepts (< 8) do not import with pandas 3, and its ``random_state`` does not reach
the resampling indices (drawn from NumPy's global generator). This module resamples with
``scipy.stats.bootstrap``, whose independent resampling of each sample is rliable's stratified
bootstrap, from a generator seeded by ``seed`` on every call: the same runs give the same interval,
whatever else is computed before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["CONFIDENCE", "RESAMPLES", "SEED", "Difference", "Interval", "difference_of_means", "iqm",
           "mean_ranks", "probability_of_improvement", "verdict"]

#: Coverage of every interval.
CONFIDENCE = 0.95
#: Bootstrap resamples and Monte Carlo permutations (permutations are enumerated below this many).
RESAMPLES = 9999
#: Seed of the generator every interval and test draws from.
SEED = 0
#: Interval ends closer to 0 than this are 0 (means of equal scores summed in another order).
ROUNDING = 1e-12
#: Fewest runs a side (a task, for :func:`iqm`) that an interval or a test needs.
MIN_RUNS = 2


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval; ``low`` and ``high`` are ``None`` where there were too few
    runs to resample."""

    estimate: float
    low: float | None = None
    high: float | None = None

    @property
    def available(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class Difference:
    """One cell's comparison: ``other`` against ``base``.

    Attributes:
        n_base, n_other: runs on each side.
        base_mean, other_mean: the means over runs.
        interval: ``other_mean - base_mean`` and its bootstrap interval.
        p_value: two-sided permutation test of the difference of means (``None``: too few runs).
        verdict: ``improved``, ``unchanged``, ``decreased`` (by the interval) or ``n/a``.
    """

    n_base: int
    n_other: int
    base_mean: float
    other_mean: float
    interval: Interval
    p_value: float | None
    verdict: str


def _sample(values: ArrayLike, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} holds a score that is not a finite number ({x.tolist()}): drop or re-run that run")
    return x


def _mean_difference(base: np.ndarray, other: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(other, axis=axis) - np.mean(base, axis=axis)


def verdict(interval: Interval) -> str:
    """``improved`` when the interval lies above 0, ``decreased`` below, ``unchanged`` when it
    contains 0 (ends included, ends within :data:`ROUNDING` of 0 counted as 0), ``n/a`` when there is none."""
    if interval.low is None or interval.high is None:
        return "n/a"
    return "improved" if interval.low > ROUNDING else "decreased" if interval.high < -ROUNDING else "unchanged"


def difference_of_means(base: ArrayLike, other: ArrayLike, *, confidence: float = CONFIDENCE,
                        resamples: int = RESAMPLES, seed: int = SEED) -> Difference:
    """``mean(other) - mean(base)`` with its bootstrap interval, permutation test and verdict.

    Args:
        base: ``(n,)`` the baseline's scores, one per run.
        other: ``(m,)`` the other method's scores, one per run.
        confidence: coverage of the interval.
        resamples: bootstrap resamples; permutations are enumerated when there are at most this many
            splits of the pooled runs, else this many are drawn.
        seed: seed of the generator (one fresh generator for the interval, one for the test).

    With fewer than 2 runs on either side there is no spread to resample: the interval and the p-value
    are ``None`` and the verdict ``n/a``.
    """
    x, y = _sample(base, "the baseline's runs"), _sample(other, "the other method's runs")
    if len(x) == 0 or len(y) == 0:
        raise ValueError(f"a side has no runs ({len(x)} baseline, {len(y)} other): nothing to compare")
    estimate = float(y.mean() - x.mean())
    if min(len(x), len(y)) < MIN_RUNS:
        return Difference(len(x), len(y), float(x.mean()), float(y.mean()), Interval(estimate), None, "n/a")
    boot = stats.bootstrap((x, y), _mean_difference, n_resamples=resamples, confidence_level=confidence,
                           method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    interval = Interval(estimate, *(float(v) for v in boot.confidence_interval))
    test = stats.permutation_test((x, y), _mean_difference, permutation_type="independent", vectorized=True,
                                  n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return Difference(len(x), len(y), float(x.mean()), float(y.mean()), interval, float(test.pvalue),
                      verdict(interval))


def _strata(samples: Sequence[ArrayLike], what: str) -> list[np.ndarray]:
    out = [_sample(s, f"{what}, task {k}") for k, s in enumerate(samples)]
    if not out or any(len(s) == 0 for s in out):
        raise ValueError(f"{what}: every task needs at least one run ({[len(s) for s in out]} runs)")
    return out


def _bootstrap(strata: list[np.ndarray], statistic, confidence: float, resamples: int, seed: int) -> Interval:
    estimate = float(statistic(*strata, axis=-1))
    if min(len(s) for s in strata) < MIN_RUNS:
        return Interval(estimate)
    boot = stats.bootstrap(tuple(strata), statistic, n_resamples=resamples, confidence_level=confidence,
                           method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return Interval(estimate, *(float(v) for v in boot.confidence_interval))


def _iqm(*strata: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(np.concatenate(strata, axis=axis), 0.25, axis=axis)


def iqm(strata: Sequence[ArrayLike], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
        seed: int = SEED) -> Interval:
    """Interquartile mean of one method's scores pooled over tasks, with a stratified bootstrap interval.

    Args:
        strata: one ``(n_k,)`` array of run scores per task (runs may differ in number between tasks).
        confidence, resamples, seed: as in :func:`difference_of_means`.

    The IQM is the mean of the scores between the 25th and 75th percentiles of all runs of all tasks
    (``scipy.stats.trim_mean(x, 0.25)``: a quarter of the scores cut at each end, so with fewer than 4
    scores it is the mean). Each resample draws each task's runs with replacement from that task's
    runs. No interval where a task has fewer than 2 runs.
    """
    return _bootstrap(_strata(strata, "iqm"), _iqm, confidence, resamples, seed)


def probability_of_improvement(x: Sequence[ArrayLike], y: Sequence[ArrayLike], *, confidence: float = CONFIDENCE,
                               resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """``P(X > Y)``: the chance that a run of X scores above a run of Y on the same task, averaged over
    tasks, with a stratified bootstrap interval (Agarwal et al. 2021, Section 4.3).

    Args:
        x: one ``(n_k,)`` array of X's run scores per task.
        y: one ``(m_k,)`` array of Y's run scores per task, in the same task order.
        confidence, resamples, seed: as in :func:`difference_of_means`.

    Per task ``P(X_k > Y_k) = U_k / (n_k m_k)``, ``U_k`` the Mann-Whitney statistic of X over Y (pairs
    where X's run is higher, plus half the ties): 0.5 when the two are alike, 1 when every run of X
    beats every run of Y. Each resample draws every task's runs of X and of Y on their own.
    """
    xs, ys = _strata(x, "probability_of_improvement x"), _strata(y, "probability_of_improvement y")
    if len(xs) != len(ys):
        raise ValueError(f"probability_of_improvement: x has {len(xs)} tasks and y {len(ys)}: pass one array per task "
                         "to each, in the same order")
    k = len(xs)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        per_task = [stats.mannwhitneyu(a, b, axis=axis, method="asymptotic").statistic / (a.shape[axis] * b.shape[axis])
                    for a, b in zip(samples[:k], samples[k:], strict=True)]
        return np.mean(per_task, axis=0)

    return _bootstrap([*xs, *ys], statistic, confidence, resamples, seed)


def mean_ranks(means: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, int]]:
    """Each method's rank averaged over tasks: ``{method: (mean rank, tasks)}``.

    Args:
        means: ``{task: {method: mean score}}``; on each task the methods are ranked by their mean
            score, 1 the highest, tied methods sharing the mean of their ranks (``scipy.stats.rankdata``,
            ``average``). A method counts only the tasks it ran on.
    """
    ranks: dict[str, list[float]] = {}
    for task, scores in means.items():
        names = list(scores)
        values = _sample([scores[m] for m in names], f"mean scores on {task}")
        for name, rank in zip(names, stats.rankdata(-values, method="average"), strict=True):
            ranks.setdefault(name, []).append(float(rank))
    return {name: (float(np.mean(r)), len(r)) for name, r in ranks.items()}
