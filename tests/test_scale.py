"""Multi-process fit, resume, TensorBoard read-back and the benchmark runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from lightning_mbo.callbacks import DesignAscent
from lightning_mbo.cli import main
from lightning_mbo.data import MBODataModule
from lightning_mbo.methods import Ignite, Surrogate

REPO = Path(__file__).resolve().parents[1]

# A small but real run: 2000 visible TFBind8 rows, a 2x32 ensemble under IGNITE.
SMALL = [
    "--config", str(REPO / "configs/tfbind8/ens_mean_ignite.yaml"),
    "--trainer.max_epochs=2",
    "--model.init_args.hidden=[32, 32]",
    "--model.init_args.ascent_steps=20",
    "--data.max_samples=2000",
    "--data.drop_last=true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
]


def _fit_subprocess(tmp: Path, name: str, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lightning_mbo", "fit", *SMALL, f"--trainer.logger.init_args.save_dir={tmp}",
           f"--trainer.logger.init_args.name={name}", "--trainer.logger.init_args.version=v", *extra]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp / name / "v" / "results.json").read_text())


def test_two_process_ddp_fit_equals_one_process(tmp_path):
    """Training (global batch 128 split 64 + 64), ascent (candidates split over ranks) and scoring."""
    one = _fit_subprocess(tmp_path, "one", ["--trainer.devices=1"])
    two = _fit_subprocess(tmp_path, "two", ["--trainer.devices=2", "--trainer.strategy=ddp"])
    for key in ("score_100th", "score_80th", "score_50th", "mean_predicted_final"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    d1 = np.load(tmp_path / "one" / "v" / "designs.npy")
    d2 = np.load(tmp_path / "two" / "v" / "designs.npy")
    assert d1.shape == d2.shape == (128, 8)
    assert (d1 == d2).mean() > 0.99


class _Crash(Callback):
    """Stops the process at the start of an epoch, as a kill would (checkpoints of earlier epochs stay)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def _trainer(root: Path, *callbacks: Callback) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True), *callbacks], default_root_dir=root,
    )


def _small_run(root: Path, crash_at: int | None = None, ckpt: str | None = None) -> DesignAscent:
    pl.seed_everything(0)
    dm = MBODataModule(max_samples=2000, seed=0)
    model = Surrogate(dm.input_dim, members=2, hidden=(32, 32), ignite=Ignite(lambda_lr=0.05), select_best=True,
                      ascent_steps=20)
    ascent = DesignAscent(output_dir=str(root))
    callbacks = [ascent] + ([_Crash(crash_at)] if crash_at is not None else [])
    trainer = _trainer(root, *callbacks)
    if crash_at is not None:
        with pytest.raises(RuntimeError, match="simulated kill"):
            trainer.fit(model, dm)
    else:
        trainer.fit(model, dm, ckpt_path=ckpt)
    return ascent


def test_resume_from_last_checkpoint_matches_uninterrupted_run(tmp_path):
    straight = _small_run(tmp_path / "straight")
    _small_run(tmp_path / "resumed", crash_at=2)
    last = tmp_path / "resumed" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1
    resumed = _small_run(tmp_path / "resumed", ckpt=str(last))
    for key in ("score_100th", "score_80th", "score_50th", "mean_predicted_final"):
        assert resumed.results[key] == straight.results[key], key
    np.testing.assert_array_equal(np.load(tmp_path / "straight" / "designs.npy"),
                                  np.load(tmp_path / "resumed" / "designs.npy"))


def test_tensorboard_events_hold_training_design_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    main(["fit", *SMALL, "--trainer.max_epochs=1", "--trainer.log_every_n_steps=1",
          f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.logger.init_args.name=tb", "--trainer.logger.init_args.version=v"])
    run = tmp_path / "tb" / "v"
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/lambda", "train/grad_norm", "train/violation", "val/pearson",
                "design/score_100th", "design/score_80th", "design/score_50th", "design/predicted_mean"):
        assert tag in tags["scalars"], tag
    assert "design/normalized_scores" in tags["histograms"]
    assert "design/predicted_vs_oracle" in tags["images"]
    # The trajectory has one point per ascent step plus the end.
    assert len(acc.Scalars("design/predicted_mean")) == 21
    results = json.loads((run / "results.json").read_text())
    assert acc.Scalars("design/score_100th")[-1].value == pytest.approx(results["score_100th"], rel=1e-6)
    # HParams tab: an hparams session whose metrics include the final scores.
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "design/score_100th" in {m.name.tag for m in experiment.metric_infos}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model/members"].number_value == 5


def test_benchmark_runner_writes_table_and_skips_finished_runs(tmp_path):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(
        f"output_dir: {tmp_path / 'grid'}\nlabel: test scale\nseeds: [0, 1]\n"
        "args: ['--trainer.max_epochs=1', '--data.max_samples=1500', '--model.init_args.hidden=[16, 16]',"
        " '--model.init_args.ascent_steps=5', '--trainer.accelerator=cpu']\n"
        "runs:\n"
        f"  - name: ga\n    configs: [{REPO / 'configs/tfbind8/grad_ascent.yaml'}]\n"
        f"  - name: ens\n    configs: [{REPO / 'configs/tfbind8/ens_mean.yaml'}]\n"
    )
    main(["benchmark", "--config", str(cfg)])
    grid = tmp_path / "grid"
    table = (grid / "table.md").read_text()
    assert "test scale" in table and "| TFBind8-Exact-v0 | ga | grad_ascent | 2 |" in table
    assert "0.969 ± 0.021" in table  # the published number alongside
    assert (grid / "table.csv").read_text().count("\n") == 3
    assert (grid / "table.png").stat().st_size > 1000
    stamp = (grid / "ga" / "seed_0" / "results.json").stat().st_mtime_ns
    main(["benchmark", "--config", str(cfg)])  # everything finished: nothing re-runs
    assert (grid / "ga" / "seed_0" / "results.json").stat().st_mtime_ns == stamp


def test_replicates_are_independent_runs_with_their_own_rows(tmp_path):
    """Seeds as a batch dimension: R stacked runs, each its own init, ascent and results row."""
    main(["fit", *SMALL, "--trainer.max_epochs=2", "--model.init_args.ascent_steps=200",
          "--model.init_args.replicates=2", "--model.init_args.members=2",
          f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=rep",
          "--trainer.logger.init_args.version=v"])
    run = tmp_path / "rep" / "v"
    results = json.loads((run / "results.json").read_text())
    rows = results["runs"]
    assert [r["replicate"] for r in rows] == [0, 1]
    assert all(len(r["ignite"]["lambda"]) == 2 for r in rows)  # each replicate reports its own members
    designs, scores = np.load(run / "designs.npy"), np.load(run / "scores.npy")
    assert designs.shape == (2, 128, 8) and scores.shape == (2, 128)
    assert not np.array_equal(designs[0], designs[1])  # different networks ascend differently
    for r, row in enumerate(rows):
        normalized = scores[r]  # TFBind8's range is [0, 1]: raw scores are the normalised ones
        assert row["score_100th"] == pytest.approx(float(normalized.max()))
