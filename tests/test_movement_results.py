"""Every result says whether the search moved: rows, the table, runs.csv and its round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_mbo import benchmark
from lightning_mbo.tasks.task import Task


def test_rows_carry_movement_checked_against_the_written_designs(quick_fit) -> None:
    run, row = quick_fit("tfbind8/grad_ascent.yaml", "--model.init_args.hidden", "[32, 32]")
    designs = np.load(run / "designs.npy")
    task = Task("TFBind8-Exact-v0", max_samples=1000)
    starts = task.top_k(128)[0]
    hamming = (designs[:, None, :] != starts[None]).sum(-1).min(axis=1)
    assert row["moved_fraction"] == pytest.approx(float((hamming > 0).mean()))
    assert row["hamming_mean"] == pytest.approx(float(hamming.mean()))
    visible = {tuple(r) for r in task.visible_designs()}
    assert row["in_data_fraction"] == pytest.approx(float(np.mean([tuple(d) in visible for d in designs])))
    assert row["moved_fraction"] > 0.5  # 200 steps of 0.01 sqrt(D) move TFBind8's starts
    assert "mean_predicted_start" in row and row["mean_predicted_start"] != row["mean_predicted_final"]


def test_a_search_that_does_not_move_is_flagged(quick_fit, capsys) -> None:
    run, row = quick_fit("tfbind8/grad_ascent.yaml", "--model.init_args.hidden", "[16]", "--ascent.steps", "0")
    assert row["moved_fraction"] == 0.0 and row["hamming_mean"] == 0.0 and row["in_data_fraction"] == 1.0
    assert row["score_100th"] == pytest.approx(row["start_score_100th"])
    assert "did not move" in capsys.readouterr().out
    table = benchmark.summarize([{**row, "run": "ga"}])
    assert table[0]["flags"].startswith("did not move")
    assert "did not move" in benchmark.format_table(table)


def _row(seed: int, moved: float, **extra) -> dict:
    return {"task": "TFBind8-Exact-v0", "run": "ga", "method": "grad_ascent", "seed": seed, "replicate": 0,
            "score_100th": 0.9 + seed / 100, "score_80th": 0.7, "score_50th": 0.5, "start_score_100th": 0.439,
            "best_visible": 0.439, "moved_fraction": moved, "hamming_mean": 2.0 * moved, "in_data_fraction": 0.1,
            "wall_seconds": 1.0 + seed, **extra}


def test_table_reports_mean_movement_and_flags_an_unmoved_cell() -> None:
    moving = benchmark.summarize([_row(0, 0.9), _row(1, 0.7)])[0]
    assert moving["moved_fraction_mean"] == pytest.approx(0.8) and moving["flags"] == ""
    still = benchmark.summarize([_row(0, 0.0), _row(1, 0.06)])[0]
    assert still["flags"] == "did not move (3% moved)"  # the mean, 3%, is under 5%
    barely = benchmark.summarize([_row(0, 0.1), _row(1, 0.2)])[0]
    assert barely["flags"] == "barely moved (15% moved)"  # TFBind10's quick gradient ascent moves this little


def test_runs_csv_gives_the_same_table_without_rerunning(tmp_path: Path, capsys) -> None:
    rows = [_row(0, 0.9, ignite={"lambda": [0.1, 0.2], "rho_grad_norm": [0.3, 0.4]},
                 search_diagnostics={"flags": ["cma_es: stopped far away"]}),
            _row(1, 0.8, ignite={"lambda": [0.15, 0.25], "rho_grad_norm": [0.35, 0.45]})]
    rows += [{**r, "run": "ga_ignite", "method": "grad_ascent+ignite"} for r in rows]
    benchmark.write_table(rows, tmp_path / "grid", "quick scale, 2 seeds")
    again = tmp_path / "again"
    again.mkdir()
    for name in ("runs.csv", "label.txt", "machine.txt"):
        (again / name).write_bytes((tmp_path / "grid" / name).read_bytes())
    benchmark.collect([str(again)], output_dir=str(again))
    assert (again / "table.md").read_text() == (tmp_path / "grid" / "table.md").read_text()
    assert (again / "table.csv").read_text() == (tmp_path / "grid" / "table.csv").read_text()
    assert "cma_es: stopped far away" in (again / "table.md").read_text()


def test_results_of_an_empty_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(benchmark.SettingsError, match="no runs.csv"):
        benchmark.collect([str(tmp_path)])


def test_a_cells_searcher_flags_are_counted_by_kind() -> None:
    rows = [_row(s, 1.0, search_diagnostics={"flags": [f"cma_es: stopped after {50 + s} iterations", "other"]})
            for s in range(3)]
    flags = benchmark.summarize(rows)[0]["flags"]
    assert flags == "cma_es: stopped after 50 iterations (3 of 3 runs); other (3 of 3 runs)"
