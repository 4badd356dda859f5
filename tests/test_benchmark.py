"""The benchmark runner's table arithmetic and how it labels runs (lightning_mbo.benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_mbo import benchmark
from lightning_mbo.benchmark import Run, run_grid, summarize


def _row(seed: int, s100: float, s80: float, s50: float, wall: float, run: str = "ens", **extra) -> dict:
    return {"task": "TFBind8-Exact-v0", "run": run, "method": "ens_mean", "seed": seed, "score_100th": s100,
            "score_80th": s80, "score_50th": s50, "wall_seconds": wall, "best_visible": 0.439, **extra}


def test_summarize_is_mean_and_population_std_per_run() -> None:
    rows = [_row(0, 0.9, 0.5, 0.1, 10.0), _row(1, 1.0, 0.7, 0.4, 30.0), _row(2, 0.8, 0.6, 0.1, 20.0),
            _row(0, 0.2, 0.2, 0.2, 1.0, run="ga")]
    table = {e["run"]: e for e in summarize(rows)}
    ens = table["ens"]
    assert (ens["seeds"], ens["n"]) == (3, 3)
    assert ens["score_100th_mean"] == pytest.approx(0.9)
    assert ens["score_100th_std"] == pytest.approx((0.02 / 3) ** 0.5)  # ddof 0: sqrt(((.0)²+(.1)²+(.1)²)/3)
    assert ens["score_80th_mean"] == pytest.approx(0.6) and ens["score_80th_std"] == pytest.approx((0.02 / 3) ** 0.5)
    assert ens["score_50th_mean"] == pytest.approx(0.2) and ens["score_50th_std"] == pytest.approx(0.02**0.5)
    assert ens["wall_seconds_mean"] == pytest.approx(20.0)
    assert ens["published_100th"].startswith("0.985")
    assert ens["ignite_lambda_min"] is None
    ga = table["ga"]
    assert (ga["n"], ga["score_100th_mean"], ga["score_100th_std"]) == (1, 0.2, 0.0)


def test_summarize_reports_ignite_ranges_over_members_and_runs() -> None:
    rows = [_row(0, 1, 1, 1, 1, ignite={"lambda": [0.4, 0.45], "rho_grad_norm": [0.11, 0.106]}),
            _row(1, 1, 1, 1, 1, ignite={"lambda": [0.42, 0.41], "rho_grad_norm": [0.108, 0.109]})]
    (e,) = summarize(rows)
    assert (e["ignite_lambda_min"], e["ignite_lambda_max"]) == (0.4, 0.45)
    assert (e["ignite_rho_grad_norm_min"], e["ignite_rho_grad_norm_max"]) == (0.106, 0.11)


def test_grid_passes_each_seed_and_labels_replicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job gets its own seed on the command line; stacked replicates are rows of that seed."""
    calls: list[list[str]] = []

    def fake_fit(cli_args: list[str], run_dir: Path) -> None:  # records the command, writes what fit would
        calls.append(cli_args)
        seed = int(next(a for a in cli_args if a.startswith("--seed_everything=")).split("=")[1])
        rows = [_row(seed, 0.5 + seed / 10 + r / 100, 0.5, 0.5, 1.0, replicate=r) for r in range(2)]
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"rows": rows, "provenance": {"commit": None}}))

    monkeypatch.setattr(benchmark, "_fit", fake_fit)
    monkeypatch.setattr(benchmark, "resolved_config", lambda args: "\n".join(args))  # no real configs here
    rows = run_grid([Run("ens", ["cfg.yaml"])], seeds=[3, 5], output_dir=str(tmp_path), replicates=2)
    assert len(calls) == 2
    for args, seed in zip(calls, (3, 5), strict=True):
        assert f"--seed_everything={seed}" in args and f"--data.seed={seed}" in args
        assert "--model.init_args.replicates=2" in args
    assert [(r["seed"], r["replicate"]) for r in rows] == [(3, 0), (3, 1), (5, 0), (5, 1)]
    table = (tmp_path / "table.md").read_text()
    assert "| TFBind8-Exact-v0 | ens | ens_mean | 2 | 4 |" in table
    with pytest.raises(ValueError, match="replicates"):
        run_grid([Run("ens", ["cfg.yaml"])], seeds=[0], output_dir=str(tmp_path), replicates=0)
