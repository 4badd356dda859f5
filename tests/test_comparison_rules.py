"""The paper's count-by-means rule (IGNITE, Dao et al., NeurIPS 2024, Section 5 and Table 1):
pinned through ``pairs``, ``headline``, ``Pair.gain`` and ``Pair.unchanged`` on hand-made tables.

Rule: gain = 100 (ignite − base) / |base| (percent of the baseline's mean, its sign the direction
of the change even when the baseline's mean is negative); a case is unchanged when the two means
agree to the three decimals the paper's tables print."""

from __future__ import annotations

import pytest

from lightning_mbo.comparison import Pair, headline, pairs


def entry(task: str, run: str, mean: float, ignite: bool) -> dict:
    method = f"{run}+ignite" if ignite else run
    return {"task": task, "run": f"{run}_ignite" if ignite else run, "method": method,
            "score_100th_mean": mean, "score_80th_mean": mean, "score_50th_mean": mean}


def case(base: float, ign: float) -> Pair:
    return Pair("T", "b", entry("T", "b", base, False), entry("T", "b", ign, True))


@pytest.mark.parametrize(("base", "ign", "gain"), [
    (0.5, 0.55, 10.0),
    (0.5, 0.45, -10.0),
    (-2.0, -1.0, 50.0),     # negative baseline, IGNITE higher: a gain
    (-2.0, -3.0, -50.0),    # negative baseline, IGNITE lower: a loss
    (-0.5, 0.5, 200.0),
])
def test_gain_is_relative_to_the_absolute_baseline_mean(base, ign, gain) -> None:
    assert case(base, ign).gain() == pytest.approx(gain)


def test_zero_baseline_gain() -> None:
    assert case(0.0, 0.1).gain() == float("inf")
    assert case(0.0, 0.0).gain() == 0.0
    assert case(0.0, -0.1).gain() <= 0.0


@pytest.mark.parametrize(("base", "ign", "same"), [
    (0.9851, 0.9854, True),    # both print 0.985
    (0.9851, 0.9856, False),   # 0.985 vs 0.986
    (0.98549, 0.98551, False),  # 0.985 vs 0.986, though only 2e-5 apart
    (0.9860, 0.9864, True),
    (-1.2341, -1.2344, True),
    (-1.2341, -1.2346, False),
    (0.5, 0.5, True),
])
def test_unchanged_means_agree_to_three_decimals(base, ign, same) -> None:
    assert case(base, ign).unchanged() is same


def test_headline_counts_by_means_on_a_hand_made_table() -> None:
    table = [
        entry("A", "ens_mean", 0.50, False), entry("A", "ens_mean", 0.55, True),     # +10%
        entry("A", "ens_min", 0.80, False), entry("A", "ens_min", 0.72, True),       # -10%
        entry("B", "ens_mean", -2.0, False), entry("B", "ens_mean", -1.0, True),     # +50% (negative base)
        entry("B", "ens_min", -2.0, False), entry("B", "ens_min", -2.2, True),       # -10% (negative base)
        entry("C", "ens_mean", 0.9851, False), entry("C", "ens_mean", 0.9853, True),  # unchanged (3 decimals)
        entry("C", "ens_min", 0.0, False), entry("C", "ens_min", 0.0, True),         # zero base, no change
        entry("C", "lonely", 0.3, False),                                            # no partner: left out
    ]
    cases = pairs(table)
    assert [(p.task, p.baseline) for p in cases] == [("A", "ens_mean"), ("A", "ens_min"), ("B", "ens_mean"),
                                                     ("B", "ens_min"), ("C", "ens_mean"), ("C", "ens_min")]
    h = headline(cases)
    assert (h["cases"], h["improved"], h["unchanged"], h["decreased"]) == (6, 2, 2, 2)
    assert h["mean_gain"] == pytest.approx(30.0) and h["peak_gain"] == pytest.approx(50.0)
    assert h["mean_loss"] == pytest.approx(-10.0) and h["worst_loss"] == pytest.approx(-10.0)


def test_headline_each_percentile_on_its_own_means() -> None:
    b, i = entry("A", "m", 0.5, False), entry("A", "m", 0.5, True)
    i["score_50th_mean"] = 0.4
    h100, h50 = headline(pairs([b, i]), "100th"), headline(pairs([b, i]), "50th")
    assert (h100["improved"], h100["unchanged"], h100["decreased"]) == (0, 1, 0)
    assert (h50["improved"], h50["unchanged"], h50["decreased"]) == (0, 0, 1)
    assert h50["worst_loss"] == pytest.approx(-20.0)


def test_tiny_change_that_rounds_apart_counts_as_a_change() -> None:
    h = headline([case(0.98549, 0.98551)])
    assert (h["improved"], h["unchanged"]) == (1, 0)
