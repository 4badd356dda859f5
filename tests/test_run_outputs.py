"""What a run's results rows report: the starting designs' score (the oracle on the unmodified
top-128, never the dataset's labels) and, with replicates, each replicate's own predicted scores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_mbo.callbacks import design_ascent
from lightning_mbo.cli import main
from lightning_mbo.functional.metrics import score_percentiles
from lightning_mbo.search import gradient
from lightning_mbo.search.gradient import AscentResult
from lightning_mbo.tasks import QUADRATIC
from lightning_mbo.tasks.task import Task

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", str(REPO / "configs" / "tfbind8" / "ens_mean.yaml"),
        "--config", str(REPO / "configs" / "quick.yaml"),
        "--trainer.max_epochs", "1", "--data.max_samples", "1000", "--model.init_args.hidden", "[8]",
        "--model.init_args.members", "2", "--ascent.steps", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


def _fit(tmp_path: Path, monkeypatch, *args: str):
    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])
    monkeypatch.chdir(tmp_path)
    return main(["fit", *TINY, *args, "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")])


def test_start_score_is_the_oracle_on_the_unmodified_top_designs(tmp_path, monkeypatch) -> None:
    """An oracle that disagrees with the dataset's labels (the count of class 1): the row's
    ``start_score_*`` are that oracle's percentiles on the 128 best visible designs (by label),
    normalised as every score is; the labels' own percentiles differ."""

    def oracle(self, x):
        return (np.asarray(x) == 1).sum(-1).astype(np.float32)

    monkeypatch.setattr(Task, "score", oracle)
    cli = _fit(tmp_path, monkeypatch)
    row = cli.trainer.callbacks[[type(c) for c in cli.trainer.callbacks].index(design_ascent.DesignAscent)] \
        .results["rows"][0]
    task = cli.datamodule.task
    top_x, top_y = task.top_k(128)
    expect = score_percentiles(task.normalize_score(oracle(task, top_x)))
    labels = score_percentiles(task.normalize_score(top_y))
    for k in ("score_100th", "score_80th", "score_50th"):
        assert row[f"start_{k}"] == pytest.approx(expect[k])
    assert row["start_score_100th"] != pytest.approx(labels["score_100th"])


def test_each_replicate_row_carries_its_own_predicted_scores(tmp_path, monkeypatch) -> None:
    """Two stacked replicates; the search's final predictions are 0 for replicate 0's candidates and
    1 for replicate 1's (normalised): each row's ``mean_predicted_final`` is its own block's mean."""
    real = gradient.gradient_ascent

    def marked(x0, *args, **kwargs):
        out = real(x0, *args, **kwargs)
        traj = out.trajectory.clone()
        n = traj.shape[1]
        traj[-1, : n // 2], traj[-1, n // 2:] = 0.0, 1.0
        return AscentResult(out.x, traj, stats=out.stats, diagnostics=out.diagnostics)

    monkeypatch.setattr(gradient, "gradient_ascent", marked)
    # The synthetic quadratic task, every visible row (a random subsample would make the replicates
    # stand for different data).
    cli = _fit(tmp_path, monkeypatch, "--model.init_args.replicates", "2", "--data.task", QUADRATIC,
               "--data.max_samples", "0")
    dm = cli.datamodule
    rows = [r for c in cli.trainer.callbacks if isinstance(c, design_ascent.DesignAscent) for r in c.results["rows"]]
    assert [r["replicate"] for r in rows] == [0, 1]
    import torch  # noqa: PLC0415

    zero, one = (float(dm.denormalize_y(torch.tensor([v]))[0]) for v in (0.0, 1.0))
    assert rows[0]["mean_predicted_final"] == pytest.approx(zero, rel=1e-5, abs=1e-6)
    assert rows[1]["mean_predicted_final"] == pytest.approx(one, rel=1e-5, abs=1e-6)
    assert rows[0]["mean_predicted_start"] != rows[1]["mean_predicted_start"]  # own members, own predictions
