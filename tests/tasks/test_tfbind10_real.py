"""TFBind10 on design-bench's real shards (``tf_bind_10-pho4``), where a data directory holds them.

Marked ``realdata``: they read ``$LIGHTNING_MBO_DATA_DIR`` (read when this module is collected, since
the suite's hermetic fixture hides it from each test) and are skipped where it does not hold
TFBind10. The counts are design-bench 2.0.20's (Trabucco et al. 2022): 84 shards, 8,321,066 rows,
every 10-mer 5-8 times; the visible split is the bottom 50% by score, ties kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_mbo.tasks.task import Task

DATA_DIR = os.environ.get("LIGHTNING_MBO_DATA_DIR")
HAS_TFBIND10 = bool(DATA_DIR) and (Path(DATA_DIR) / "tf_bind_10-pho4" / "tf_bind_10-x-83.npy").is_file()
REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not HAS_TFBIND10, reason="TFBind10's shards are not in $LIGHTNING_MBO_DATA_DIR")]


@pytest.fixture(scope="module")
def tfbind10() -> Task:
    return Task("TFBind10-Exact-v0", data_dir=DATA_DIR, max_samples=10_000)


def test_shard_and_row_counts(tfbind10: Task) -> None:
    assert tfbind10.source["files"] == 2 * 84
    assert tfbind10.x_all.shape == (8_321_066, 10) and tfbind10.x_all.dtype == np.int32
    assert tfbind10.y_all.shape == (8_321_066,)
    # The normalisation constants are the full dataset's range.
    assert float(tfbind10.y_all.min()) == pytest.approx(-1.8585268)
    assert float(tfbind10.y_all.max()) == pytest.approx(2.1287067)
    # Every 10-mer occurs (4^10 of them), 5-8 times.
    keys = (tfbind10.x_all.astype(np.int64) * 4 ** np.arange(10)).sum(axis=1)
    counts = np.bincount(keys, minlength=4**10)
    assert counts.min() == 5 and counts.max() == 8


def test_visible_split(tfbind10: Task) -> None:
    visible = tfbind10.visible_designs()
    assert len(visible) == 4_161_482
    median = np.percentile(tfbind10.y_all, 50)
    assert tfbind10.y.max() <= median
    assert len(tfbind10.y) == 10_000  # design-baselines' uniform subsample of the visible rows
    assert tfbind10.best_visible == pytest.approx(float((tfbind10.y.max() + 1.8585268) / (2.1287067 + 1.8585268)))
    assert float((median + 1.8585268) / (2.1287067 + 1.8585268)) == pytest.approx(0.467, abs=1e-3)  # D(best)


def test_oracle_is_the_last_occurrence_on_a_sample(tfbind10: Task) -> None:
    rng = np.random.default_rng(0)
    rows = rng.choice(len(tfbind10.x_all), size=200, replace=False)
    designs = tfbind10.x_all[rows]
    keys = (tfbind10.x_all.astype(np.int64) * 4 ** np.arange(10)).sum(axis=1)
    want = []
    for key in (designs.astype(np.int64) * 4 ** np.arange(10)).sum(axis=1):
        want.append(tfbind10.y_all[np.flatnonzero(keys == key)[-1]])
    np.testing.assert_array_equal(tfbind10.score(designs), np.array(want, dtype=np.float32))


def _fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict:
    import json  # noqa: PLC0415

    from lightning_mbo.cli import main  # noqa: PLC0415

    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])
    cli = main(["fit", *args, "--data.data_dir", str(DATA_DIR), "--trainer.max_epochs", "1",
                "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path)])
    return json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())["rows"][0]


def test_quick_fit_of_a_gradient_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = _fit(tmp_path, monkeypatch, "--config", str(REPO / "configs/tfbind10/grad_ascent.yaml"),
               "--config", str(REPO / "configs/quick.yaml"))
    assert row["task"] == "TFBind10-Exact-v0" and row["oracle"] == "exact"
    assert row["start_score_100th"] == pytest.approx(0.603, abs=0.01)  # the unmodified top-128's best
    assert 0 <= row["moved_fraction"] <= 1 and row["hamming_mean"] >= 0


@pytest.mark.slow  # the gradient config's quick fit above covers the real data's path in the default suite
def test_quick_fit_of_a_non_gradient_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = _fit(tmp_path, monkeypatch, "--config", str(REPO / "configs/tfbind10/cma_es.yaml"),
               "--ascent.searcher.init_args.iterations", "3")
    assert row["method"] == "cma_es/ens_mean" and row["task"] == "TFBind10-Exact-v0"
    assert row["moved_fraction"] > 0.5  # CMA-ES returns points far from every start
