"""The benchmark runner's table arithmetic and how it labels runs (lightning_mbo.benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_mbo import benchmark
from lightning_mbo.benchmark import Run, run_grid, summarize
from lightning_mbo.validation import SettingsError


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

    def fake_jobs(jobs, executor, folder) -> list:  # records the commands, writes what fit would
        for job in jobs:
            calls.append(job.cli_args)
            seed = int(next(a for a in job.cli_args if a.startswith("--seed_everything=")).split("=")[1])
            count = int(next((a for a in job.cli_args if a.startswith("--model.init_args.replicates=")),
                             "=1").split("=")[1])
            rows = [_row(seed + r, 0.5 + seed / 10 + r / 100, 0.5, 0.5, 1.0, replicate=r) for r in range(count)]
            Path(job.run_dir).mkdir(parents=True)
            (Path(job.run_dir) / "results.json").write_text(json.dumps({"rows": rows, "provenance": {}}))
        return [{} for _ in jobs]

    monkeypatch.setattr(benchmark, "run_jobs", fake_jobs)
    monkeypatch.setattr(benchmark, "resolved_config", lambda args: "\n".join(args))  # no real configs here
    rows = run_grid([Run("ens", ["cfg.yaml"])], seeds=[3, 5], output_dir=str(tmp_path), replicates=2)
    assert len(calls) == 2
    for args, seed in zip(calls, (3, 5), strict=True):
        assert f"--seed_everything={seed}" in args and f"--data.seed={seed}" in args
        assert "--model.init_args.replicates=2" in args
    assert [(r["seed"], r["replicate"]) for r in rows] == [(3, 0), (4, 1), (5, 0), (6, 1)]  # replicate k: seed s + k
    table = (tmp_path / "table.md").read_text()
    assert "| TFBind8-Exact-v0 | ens | ens_mean | 4 | 4 |" in table
    with pytest.raises(ValueError, match="replicates"):
        run_grid([Run("ens", ["cfg.yaml"])], seeds=[0], output_dir=str(tmp_path), replicates=0)
    with pytest.raises(SettingsError, match="seeds 2 apart"):
        run_grid([Run("ens", ["cfg.yaml"])], seeds=[0, 1], output_dir=str(tmp_path / "o"), replicates=2)
    calls.clear()
    rows = run_grid([Run("st", ["cfg.yaml"], stack=True), Run("sep", ["cfg.yaml"])], seeds=[0, 1, 2],
                    output_dir=str(tmp_path / "s"))
    assert [c.count("--model.init_args.replicates=3") for c in calls] == [1, 0, 0, 0]  # one stacked job, 3 plain
    assert sorted((r["run"], r["seed"]) for r in rows) == [(n, s) for n in ("sep", "st") for s in (0, 1, 2)]
    with pytest.raises(SettingsError, match="consecutive"):
        run_grid([Run("st", ["cfg.yaml"], stack=True)], seeds=[0, 2], output_dir=str(tmp_path / "t"))
    monkeypatch.setattr(benchmark, "resolved_config", lambda args: "model:\n  class_path: my_package.MyMethod\n")
    with pytest.raises(SettingsError, match="does not stack seeds"):
        run_grid([Run("st", ["cfg.yaml"], stack=True)], seeds=[0, 1], output_dir=str(tmp_path / "u"))
    calls.clear()  # the shipped methods' replicates are proven plain runs (tests/methods/test_stacked_seeds.py)
    shipped = ("lightning_mbo.methods.roma.RoMA", "lightning_mbo.methods.COMs", "lightning_mbo.methods.ict.ICT",
               "lightning_mbo.methods.TriMentoring")
    for n, path in enumerate(shipped):
        monkeypatch.setattr(benchmark, "resolved_config", lambda args, path=path: f"model:\n  class_path: {path}\n")
        run_grid([Run("st", ["cfg.yaml"], stack=True)], seeds=[0, 1], output_dir=str(tmp_path / f"v{n}"))
    assert [c.count("--model.init_args.replicates=2") for c in calls] == [1, 1, 1, 1]


# --- the comparison with and without IGNITE (lightning_mbo.comparison) -------------------------
def _entry(run: str, method: str, s100: float, task: str = "TFBind8-Exact-v0") -> dict:
    return {"task": task, "run": run, "method": method, "seeds": 3, "n": 3, "best_visible": 0.439,
            "start_score_100th": 0.439, **{f"score_{p}_{k}": (s100 if k == "mean" else 0.01)
                                           for p in ("100th", "80th", "50th") for k in ("mean", "std")}}


def test_comparison_pairs_by_baseline_and_counts_like_the_paper() -> None:
    from lightning_mbo.comparison import format_comparison, headline, pairs  # noqa: PLC0415

    table = [_entry("ens_mean", "ens_mean", 0.900), _entry("ens_mean_ignite", "ens_mean+ignite", 0.918),  # +2%
             _entry("coms", "coms", 0.800), _entry("coms_ignite", "coms+ignite", 0.7996),  # equal to 3 decimals
             _entry("reinforce_fixed", "reinforce/ens_mean", 0.500),
             _entry("reinforce_fixed_ignite", "reinforce/ens_mean+ignite", 0.490),  # -2%
             _entry("cma_es", "cma_es/ens_mean", 0.7)]  # no partner: left out
    cases = pairs(table)
    assert [(p.baseline, p.base["run"], p.ignite["run"]) for p in cases] == [
        ("coms", "coms", "coms_ignite"), ("ens_mean", "ens_mean", "ens_mean_ignite"),
        ("reinforce_fixed", "reinforce_fixed", "reinforce_fixed_ignite")]
    assert cases[1].gain() == pytest.approx(2.0) and cases[2].gain() == pytest.approx(-2.0)
    stats = headline(cases)
    assert (stats["cases"], stats["improved"], stats["unchanged"], stats["decreased"]) == (3, 1, 1, 1)
    assert stats["mean_gain"] == pytest.approx(2.0) and stats["worst_loss"] == pytest.approx(-2.0)
    text = format_comparison(table)
    assert "| TFBind8-Exact-v0 | ens_mean | 3 | 0.900 ± 0.010 | 0.918 ± 0.010 | +2.00% |" in text
    assert "0.985 -> 0.987" in text  # the published cell next to Ens-Mean on TFBind8
    assert "3 cases: 1 improved (mean +2.00%, peak +2.00%), 1 unchanged, 1 decreased" in text


# --- grids on submitit's local executor: real runs, two at a time ------------------------------
REPO = Path(__file__).resolve().parents[1]
TINY = ["--config=configs/quick.yaml", "--trainer.max_epochs=1", "--data.max_samples=1000",
        "--model.init_args.hidden=[16, 16]", "--model.init_args.members=2"]


@pytest.mark.slow  # four real fits through submitit (minutes)
def test_two_by_two_grid_runs_two_at_a_time_on_the_local_executor(tmp_path: Path, monkeypatch) -> None:
    from lightning_mbo.dispatch import Executor  # noqa: PLC0415

    monkeypatch.chdir(REPO)  # the grid's config paths are relative to the repository
    runs = [Run("ens_mean", ["configs/tfbind8/ens_mean.yaml"], TINY),
            Run("ens_mean_ignite", ["configs/tfbind8/ens_mean.yaml", "configs/ignite.yaml"], TINY)]
    rows = run_grid(runs, seeds=[0, 1], output_dir=str(tmp_path), executor=Executor(workers=2))
    assert sorted((r["run"], r["seed"]) for r in rows) == [("ens_mean", 0), ("ens_mean", 1),
                                                          ("ens_mean_ignite", 0), ("ens_mean_ignite", 1)]
    jobs = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("grid_job.json"))]
    assert len(jobs) == 4
    # two workers: the first two runs were started together and overlapped in time
    first = sorted(jobs, key=lambda j: j["started"])[:2]
    assert first[1]["started"] < first[0]["finished"]
    assert all(j["resumed_from"] is None for j in jobs)
    table = (tmp_path / "table.md").read_text()
    assert "## With and without IGNITE" in table and "| TFBind8-Exact-v0 | ens_mean | 2 |" in table
    assert "- 100th percentile: 1 case: " in table


@pytest.mark.slow  # a fit interrupted and resumed through submitit; resuming is also tested in tests/test_scale.py
def test_a_job_resumes_from_its_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from lightning_mbo.dispatch import FitJob  # noqa: PLC0415

    monkeypatch.chdir(REPO)
    base = ["fit", "--config", "configs/tfbind8/ens_mean.yaml", *TINY,
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=",
            "--trainer.logger.init_args.version=", "--trainer.enable_progress_bar=false"]
    FitJob(base, str(tmp_path), "first")()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    job = FitJob([*base, "--trainer.max_epochs=2"], str(tmp_path), "second")()  # e.g. requeued after a pre-emption
    assert job["resumed_from"] == str(tmp_path / "checkpoints" / "last.ckpt")
    ckpt = __import__("torch").load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1  # the second epoch ran on top of the first


def test_executor_settings_are_checked() -> None:
    from lightning_mbo.dispatch import Executor  # noqa: PLC0415
    from lightning_mbo.validation import SettingsError  # noqa: PLC0415

    with pytest.raises(SettingsError, match="partition"):
        Executor(cluster="slurm")
    with pytest.raises(SettingsError, match="workers"):
        Executor(workers=0)
