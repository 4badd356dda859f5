"""Multi-process fit, resume, TensorBoard read-back and the benchmark runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from lightning_mbo.callbacks import DesignAscent
from lightning_mbo.cli import MBOTrainer, main
from lightning_mbo.data import MBODataModule
from lightning_mbo.methods import Ignite, Surrogate
from lightning_mbo.validation import SettingsError
from tests.conftest import read_result

REPO = Path(__file__).resolve().parents[1]

# A small but real run: 2000 visible TFBind8 rows, a 2x32 ensemble under IGNITE.
SMALL = [
    "--config", str(REPO / "configs/tfbind8/ens_mean.yaml"), "--config", str(REPO / "configs/ignite.yaml"),
    "--trainer.max_epochs=2",
    "--model.init_args.hidden=[32, 32]",
    "--ascent.steps=20",
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
    return read_result(tmp / name / "v")


def _starting_designs() -> np.ndarray:
    """The 128 designs every SMALL run starts its ascent from (top visible rows of its data)."""
    return np.asarray(MBODataModule(max_samples=2000, seed=0).task.top_k(128)[0])


# Surrogates trained and ascended hard enough that most designs move (lr 1e-2, 200 ascent steps),
# so design and score checks can fail.
MOVING = ["--model.init_args.lr=0.01", "--ascent.steps=200"]


def test_two_process_ddp_fit_equals_one_process(tmp_path):
    """Training (global batch 128 split 64 + 64), ascent (candidates split over ranks) and scoring."""
    one = _fit_subprocess(tmp_path, "one", ["--trainer.devices=1", *MOVING])
    two = _fit_subprocess(tmp_path, "two", ["--trainer.devices=2", "--trainer.strategy=ddp", *MOVING])
    for key in ("score_100th", "score_80th", "score_50th", "mean_predicted_final"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    d1 = np.load(tmp_path / "one" / "v" / "designs.npy")
    d2 = np.load(tmp_path / "two" / "v" / "designs.npy")
    assert d1.shape == d2.shape == (128, 8)
    start = _starting_designs()
    # Both halves of the candidates (rank 0's and rank 1's) moved away from where they started...
    for half in (slice(0, 64), slice(64, 128)):
        assert (d1[half] != start[half]).any(1).mean() > 0.5
        assert (d2[half] != start[half]).any(1).mean() > 0.5
    # ...and the two runs hand back the same designs (rounding may flip a rare argmax).
    assert (d1 == d2).all(1).mean() > 0.95
    s1, s2 = np.load(tmp_path / "one" / "v" / "scores.npy"), np.load(tmp_path / "two" / "v" / "scores.npy")
    assert (s1 == s2).mean() > 0.95


class _Crash(Callback):
    """Stops the process at the start of an epoch, as a kill would (checkpoints of earlier epochs stay)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def _trainer(root: Path, *callbacks: Callback) -> MBOTrainer:
    return MBOTrainer(
        max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True), *callbacks], default_root_dir=root,
    )


class _LastEpochWeights(Callback):
    """The weights training ended with, before the module restores its best epochs (callbacks'
    ``on_train_end`` runs before the module's)."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _small_run(root: Path, crash_at: int | None = None, ckpt: str | None = None) -> SimpleNamespace:
    pl.seed_everything(0)
    dm = MBODataModule(max_samples=2000, seed=0)
    # lr 1e-2: the members' validation Pearson peaks before the last epoch, so the best-epoch
    # weights differ from the last ones, and 200 ascent steps move most designs.
    model = Surrogate(dm.input_dim, members=2, hidden=(32, 32), lr=1e-2, ignite=Ignite(lambda_lr=0.05),
                      select_best=True)
    ascent, last = DesignAscent(steps=200, output_dir=str(root)), _LastEpochWeights()
    callbacks = [ascent, last] + ([_Crash(crash_at)] if crash_at is not None else [])
    trainer = _trainer(root, *callbacks)
    if crash_at is not None:
        with pytest.raises(RuntimeError, match="simulated kill"):
            trainer.fit(model, dm)
    else:
        trainer.fit(model, dm, ckpt_path=ckpt)
    return SimpleNamespace(results=ascent.results, model=model, last=getattr(last, "weights", None))


def test_resume_from_last_checkpoint_matches_uninterrupted_run(tmp_path):
    straight = _small_run(tmp_path / "straight")
    # The check has teeth: some member's best epoch is not the last one...
    assert any(not torch.equal(v, straight.last[k]) for k, v in straight.model.state_dict().items())
    _small_run(tmp_path / "resumed", crash_at=3)
    last = tmp_path / "resumed" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 2
    resumed = _small_run(tmp_path / "resumed", ckpt=str(last))
    # ...and the resumed run ends with the same (best-epoch) weights, designs and scores.
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    for key in ("score_100th", "score_80th", "score_50th", "mean_predicted_final"):
        assert resumed.results["rows"][0][key] == straight.results["rows"][0][key], key
    designs = np.load(tmp_path / "straight" / "designs.npy")
    np.testing.assert_array_equal(designs, np.load(tmp_path / "resumed" / "designs.npy"))
    assert (designs != _starting_designs()).any(1).mean() > 0.5


def test_command_line_resume_with_ckpt_path(tmp_path):
    """The README's ``fit ... --ckpt_path logs/.../checkpoints/last.ckpt``: a run stopped after 2
    of 4 epochs and resumed from its last checkpoint ends as an uninterrupted 4-epoch run."""
    every_epoch = tmp_path / "every_epoch.yaml"
    every_epoch.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: pytorch_lightning.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true, every_n_epochs: 1}\n"
    )
    common = ["fit", *SMALL, "--config", str(every_epoch), *MOVING, f"--trainer.logger.init_args.save_dir={tmp_path}"]

    def fit(name: str, *extra: str) -> Path:
        main([*common, f"--trainer.logger.init_args.name={name}", "--trainer.logger.init_args.version=v", *extra])
        return tmp_path / name / "v"

    straight = fit("straight", "--trainer.max_epochs=4")
    first = fit("first", "--trainer.max_epochs=2")
    resumed = fit("resumed", "--trainer.max_epochs=4", f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    a, b = (read_result(run) for run in (straight, resumed))
    for key in ("score_100th", "score_80th", "score_50th", "mean_predicted_final"):
        assert a[key] == b[key], key
    assert a["ignite"]["lambda"] == b["ignite"]["lambda"]
    np.testing.assert_array_equal(np.load(straight / "designs.npy"), np.load(resumed / "designs.npy"))
    # Stopping after 2 epochs gives other designs: resuming did continue training.
    assert not np.array_equal(np.load(first / "designs.npy"), np.load(straight / "designs.npy"))


def test_tensorboard_events_hold_training_design_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    main(["fit", *SMALL, "--trainer.max_epochs=1", "--trainer.log_every_n_steps=1",
          f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.logger.init_args.name=tb", "--trainer.logger.init_args.version=v"])
    run = tmp_path / "tb" / "v"
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/lambda", "train/grad_norm", "train/violation", "val/pearson",
                "design/score_100th", "design/score_80th", "design/score_50th", "design/start_score_100th",
                "design/predicted_mean", "ignite/lambda_end", "ignite/rho_grad_norm_end", "time/wall_seconds"):
        assert tag in tags["scalars"], tag
    # Per-member curves live in their own group, so the means open first.
    for m in range(5):
        assert f"members/train_loss_m{m}" in tags["scalars"] and f"members/train_lambda_m{m}" in tags["scalars"]
        assert f"members/val_pearson_m{m}" in tags["scalars"]
    assert not any(t.startswith(("train/loss_m", "val/pearson_m")) for t in tags["scalars"])
    assert "design/normalized_scores" in tags["histograms"]
    assert "design/predicted_vs_oracle" in tags["images"]
    # The trajectory has one point per ascent step plus the end.
    assert len(acc.Scalars("design/predicted_mean")) == 21
    # Final scores: ONE point each, at the run's last training step (TensorBoard keeps one point
    # per step; a second one at step 0 would be all it shows).
    results = read_result(run)
    last_step = max(e.step for e in acc.Scalars("train/loss"))
    for key in ("score_100th", "score_80th", "score_50th", "start_score_100th"):
        (event,) = acc.Scalars(f"design/{key}")
        assert event.step == last_step + 1  # global_step after the last optimizer step
        assert event.value == pytest.approx(results[key], rel=1e-6)
    # Custom Scalars: one page for training, mean and members on one chart.
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    training = {c.title: list(c.multiline.tag) for cat in layout.category if cat.title == "training" for c in cat.chart}
    assert training["loss (mean and members)"] == [r"^train/loss$", r"^members/train_loss_m\d+$"]
    assert any("unscaled" in title for title in training)
    # HParams: curated columns (what ran, flattened IGNITE settings), the final scores as metrics.
    content = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"design/score_100th", "design/start_score_100th", "val/pearson", "ignite/lambda_end",
            "ignite/rho_grad_norm_end", "time/wall_seconds"} <= metrics
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = start.hparams
    assert hp["method"].string_value == "ens_mean+ignite" and hp["members"].number_value == 5
    assert hp["search.steps"].number_value == 20 and hp["search.lr"].number_value == pytest.approx(0.049, abs=1e-3)
    assert hp["ignite.rho"].number_value == pytest.approx(0.05)
    assert hp["ignite.grad_mode"].string_value == "finite_difference"
    assert hp["epochs"].number_value == 1 and hp["seed"].number_value == 0
    assert not any(k.startswith("_") or k.endswith("_class_path") for k in hp)
    # Text: the results table, the resolved config and a legend of the tags.
    for tag in ("run/results/text_summary", "run/config/text_summary", "run/legend/text_summary"):
        assert tag in tags["tensors"], tag
    legend = acc.Tensors("run/legend/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "unscaled ‖∇_ω h‖" in legend
    table = acc.Tensors("run/results/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"| 0 | {results['score_100th']:.3f} |" in table


def test_benchmark_runner_writes_table_and_skips_finished_runs(tmp_path):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(
        f"output_dir: {tmp_path / 'grid'}\nlabel: test scale\nseeds: [1]\n"
        "args: ['--trainer.max_epochs=1', '--data.max_samples=1500', '--model.init_args.hidden=[16, 16]',"
        " '--ascent.steps=5', '--trainer.accelerator=cpu']\n"
        "runs:\n"
        f"  - name: ga\n    configs: [{REPO / 'configs/tfbind8/grad_ascent.yaml'}]\n"
    )
    main(["benchmark", "--config", str(cfg)])
    grid = tmp_path / "grid"
    table = (grid / "table.md").read_text()
    assert "test scale" in table and "| TFBind8-Exact-v0 | ga | grad_ascent | 1 |" in table
    assert "0.969 ± 0.021" in table  # the published number alongside
    assert (grid / "table.csv").read_text().count("\n") == 2
    assert (grid / "table.png").stat().st_size > 1000
    # The run has its grid seed (every seed its own job: tests/test_benchmark.py).
    assert read_result(grid / "ga" / "seed_1")["seed"] == 1
    stamp = (grid / "ga" / "seed_1" / "results.json").stat().st_mtime_ns
    main(["benchmark", "--config", str(cfg)])  # everything finished: nothing re-runs
    assert (grid / "ga" / "seed_1" / "results.json").stat().st_mtime_ns == stamp
    # The grid's settings changed: the finished runs are not silently reused...
    changed = cfg.read_text().replace("'--ascent.steps=5'", "'--ascent.steps=6'")
    cfg.write_text(changed)
    with pytest.raises(SettingsError, match=r"another config \('steps: 5' is now 'steps: 6'\)"):
        main(["benchmark", "--config", str(cfg)])
    assert (grid / "ga" / "seed_1" / "results.json").stat().st_mtime_ns == stamp
    # (--rerun_changed running them again: tests/test_runner_keys.py.)


def test_replicates_are_independent_runs_with_their_own_rows(tmp_path):
    """Seeds as a batch dimension: R stacked runs, each its own init, ascent and results row."""
    main(["fit", *SMALL, "--trainer.max_epochs=2", "--ascent.steps=200",
          "--model.init_args.replicates=2", "--model.init_args.members=2",
          "--data.subsample=stride",  # a random subsample would differ between the replicates' seeds
          f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=rep",
          "--trainer.logger.init_args.version=v"])
    run = tmp_path / "rep" / "v"
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert [r["replicate"] for r in rows] == [0, 1]
    assert all(len(r["ignite"]["lambda"]) == 2 for r in rows)  # each replicate reports its own members
    designs, scores = np.load(run / "designs.npy"), np.load(run / "scores.npy")
    assert designs.shape == (2, 128, 8) and scores.shape == (2, 128)
    assert not np.array_equal(designs[0], designs[1])  # different networks ascend differently
    for r, row in enumerate(rows):
        normalized = scores[r]  # TFBind8's range is [0, 1]: raw scores are the normalised ones
        assert row["score_100th"] == pytest.approx(float(normalized.max()))
