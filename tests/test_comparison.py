"""The with/without-IGNITE comparison's intervals, verdicts, aggregates and files, from per-run rows with
known answers (lightning_mbo.comparison)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lightning_mbo import comparison
from lightning_mbo.benchmark import summarize
from lightning_mbo.comparison import aggregates, cells, format_comparison, pairs, write_comparison

T8, T10 = "TFBind8-Exact-v0", "TFBind10-Exact-v0"
RUNS = [0.90, 0.92, 0.95]


def _rows(run: str, method: str, scores: list[float], task: str = T8) -> list[dict]:
    """One row per run: the 80th and 50th percentiles 0.1 and 0.2 below the 100th."""
    return [{"task": task, "run": run, "method": method, "seed": seed, "score_100th": s, "score_80th": s - 0.1,
             "score_50th": s - 0.2, "wall_seconds": 1.0, "best_visible": 0.439} for seed, s in enumerate(scores)]


def _grid() -> list[dict]:
    return [*_rows("ens_mean", "ens_mean", RUNS), *_rows("ens_mean_ignite", "ens_mean+ignite", RUNS),  # identical
            *_rows("coms", "coms", RUNS), *_rows("coms_ignite", "coms+ignite", [r + 0.1 for r in RUNS]),  # shifted up
            *_rows("roma", "roma", RUNS), *_rows("roma_ignite", "roma+ignite", [r - 0.1 for r in RUNS]),  # down
            *_rows("ict", "ict", [0.9]), *_rows("ict_ignite", "ict+ignite", [0.95])]  # one run a side


def _fresh() -> None:
    """Forget cached statistics, so a repeat computes them again."""
    for cached in (comparison._difference, comparison._iqm, comparison._improvement):
        cached.cache_clear()


def test_each_cell_gets_the_interval_verdict_next_to_the_papers_rule() -> None:
    rows = _grid()
    text = format_comparison(summarize(rows), rows)
    # identical runs: unchanged, p = 1; the paper's rule agrees (equal means)
    assert "| TFBind8-Exact-v0 | ens_mean | 3 / 3 | +0.000 [-0.033, +0.033] | 1 | unchanged |" in text
    # a copy shifted by more than its spread: the interval excludes 0 on the shift's side; p is 3 runs' floor
    assert "| TFBind8-Exact-v0 | coms | 3 / 3 | +0.100 [+0.067, +0.133] | 0.1 | improved |" in text
    assert "| TFBind8-Exact-v0 | roma | 3 / 3 | -0.100 [-0.133, -0.067] | 0.1 | decreased |" in text
    # one run a side: no interval, no test, and no crash
    assert "| TFBind8-Exact-v0 | ict | 1 / 1 | +0.050 [n/a] | n/a | n/a |" in text
    assert "- 100th percentile: 4 cases: 1 improved, 1 unchanged, 1 decreased, 1 n/a" in text
    # the paper's count is kept as it was, and labelled
    assert "The paper's rule" in text
    # +0.1 on 0.923 is +10.83%, ict's +0.05 on 0.9 +5.56%: both "improved" by the paper's rule
    assert "- 100th percentile: 4 cases: 2 improved (mean +8.19%, peak +10.83%), 1 unchanged, 1 decreased" in text


def test_every_percentile_is_tested_on_its_own_scores() -> None:
    rows = _grid()
    by_cell = {(c.pair.baseline, c.percentile): c.difference for c in cells(pairs(summarize(rows)), rows)}
    assert len(by_cell) == 4 * 3
    for percentile, offset in (("100th", 0.0), ("80th", 0.1), ("50th", 0.2)):
        d = by_cell[("coms", percentile)]
        assert d.base_mean == pytest.approx(sum(RUNS) / 3 - offset) and d.verdict == "improved"


def test_a_zero_baseline_mean_gets_an_interval_where_the_relative_gain_has_none() -> None:
    rows = [*_rows("ga", "ga", [-0.01, 0.0, 0.01]), *_rows("ga_ignite", "ga+ignite", [0.04, 0.05, 0.06])]
    text = format_comparison(summarize(rows), rows)
    assert "| +inf% |" in text  # the paper's relative change of a zero mean
    assert "| TFBind8-Exact-v0 | ga | 3 / 3 | +0.050 [+0.037, +0.063] | 0.1 | improved |" in text


def test_the_same_runs_give_the_same_files_twice(tmp_path: Path) -> None:
    rows = _grid()
    table = summarize(rows)
    first = write_comparison(table, rows, tmp_path / "a")
    _fresh()
    second = write_comparison(table, rows, tmp_path / "b")
    assert first == second == format_comparison(table, rows)
    assert (tmp_path / "a" / "comparison.csv").read_bytes() == (tmp_path / "b" / "comparison.csv").read_bytes()
    assert (tmp_path / "a" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "a" / "comparison.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 4 * 3 and list(records[0]) == list(comparison.CELL_FIELDS)
    ict, coms = (next(r for r in records if r["baseline"] == b and r["percentile"] == "100th") for b in ("ict", "coms"))
    assert (coms["verdict"], coms["paper_rule"], float(coms["p_value"])) == ("improved", "improved", pytest.approx(0.1))
    assert float(coms["gain_percent"]) == pytest.approx(100 * 0.1 / (sum(RUNS) / 3))
    assert (ict["verdict"], ict["paper_rule"], ict["ci_low"], ict["p_value"]) == ("n/a", "improved", "", "")


def test_no_cases_writes_nothing_and_missing_rows_are_named(tmp_path: Path) -> None:
    rows = _rows("cma_es", "cma_es/ens_mean", RUNS)
    assert write_comparison(summarize(rows), rows, tmp_path) == ""
    assert not (tmp_path / "comparison.csv").exists()
    table = summarize(_grid())
    assert "No per-run scores were given" in format_comparison(table)
    with pytest.raises(ValueError, match="no per-run rows for run 'coms'"):
        format_comparison(table, [r for r in _grid() if r["run"] != "coms"])


def test_aggregates_pool_a_method_over_tasks_and_rank_among_all_methods() -> None:
    rows = [*_rows("t8_ga", "ga", RUNS), *_rows("t8_ga_ignite", "ga+ignite", [r + 0.1 for r in RUNS]),
            *_rows("t10_ga", "ga", RUNS, T10), *_rows("t10_ga_ignite", "ga+ignite", [r + 0.1 for r in RUNS], T10),
            *_rows("t8_coms", "coms", RUNS), *_rows("t8_coms_ignite", "coms+ignite", RUNS),
            *_rows("cma_es", "cma_es/ens_mean", [0.5, 0.5, 0.5])]  # no partner: ranked all the same
    by_name = {a.name: a for a in aggregates(summarize(rows), rows)}
    assert list(by_name) == ["coms", "ga", "all baselines"]
    ga = by_name["ga"]
    assert (ga.tasks, ga.runs) == (2, (6, 6))
    # 6 runs pooled, one cut at each end: mean of 0.90, 0.92, 0.92, 0.95
    assert ga.base.estimate == pytest.approx(0.9225) and ga.ignite.estimate == pytest.approx(1.0225)
    # every run with IGNITE beats every run without, on both tasks, in every resample
    assert (ga.improvement.estimate, ga.improvement.low, ga.improvement.high) == (1.0, 1.0, 1.0)
    # TFBind8: ga+ignite 1st; ga, coms and coms+ignite (equal scores) share 2nd-4th, 3 each; cma_es 5th.
    # TFBind10: ga+ignite 1st, ga 2nd. So ga (3 + 2) / 2, ga+ignite 1, coms 3 on its one task.
    assert (ga.base_rank, ga.ignite_rank) == (2.5, 1.0)
    assert (by_name["coms"].base_rank, by_name["coms"].ignite_rank) == (3.0, 3.0)
    assert by_name["coms"].improvement.estimate == pytest.approx(0.5)
    everything = by_name["all baselines"]
    assert (everything.tasks, everything.runs, everything.base_rank) == (3, (9, 9), None)
    assert everything.improvement.estimate == pytest.approx((1 + 1 + 0.5) / 3)


def test_two_runs_of_one_method_on_a_task_keep_their_run_names() -> None:
    rows = [*_rows("reinforce", "reinforce/ens_mean", RUNS),
            *_rows("reinforce_ignite", "reinforce/ens_mean+ignite", RUNS),
            *_rows("reinforce_fixed", "reinforce/ens_mean", [r + 0.01 for r in RUNS]),
            *_rows("reinforce_fixed_ignite", "reinforce/ens_mean+ignite", [r + 0.02 for r in RUNS])]
    assert [a.name for a in aggregates(summarize(rows), rows)] == ["reinforce", "reinforce_fixed", "all baselines"]


def test_a_grid_table_and_results_from_its_runs_csv_give_the_same_comparison(tmp_path: Path, capsys) -> None:
    from lightning_mbo import benchmark  # noqa: PLC0415

    rows = _grid()
    benchmark.write_table(rows, tmp_path / "grid", "hand-made", "machine: test")
    written = (tmp_path / "grid" / "table.md").read_text()
    assert "| TFBind8-Exact-v0 | coms | 3 / 3 | +0.100 [+0.067, +0.133] | 0.1 | improved |" in written
    assert (tmp_path / "grid" / "comparison.png").is_file() and (tmp_path / "grid" / "comparison.csv").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

    events = EventAccumulator(str(tmp_path / "grid" / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["images"]) == {"grid/table", "grid/comparison"}
    image = events.Images("grid/comparison")[0]
    assert image.width > 100 and image.height > 100
    benchmark.write_table(rows, tmp_path / "grid", "hand-made", "machine: test")  # remade: one event file
    assert len(list((tmp_path / "grid" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    _fresh()
    benchmark.collect([str(tmp_path / "grid")])  # reads runs.csv back, prints the table and comparison
    printed = capsys.readouterr().out
    section = written[written.index("## With and without IGNITE"):]
    assert section.strip() in printed
