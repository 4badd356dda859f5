"""The benchmark runner's key for a finished run is its fully resolved config: a change in any
single key is refused (naming it), or run again with ``rerun_changed``; an unchanged config is
reused. And a checkpoint whose network settings (activation, ...) differ from the config's is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_mbo import benchmark
from lightning_mbo.benchmark import Run, resolved_config, run_grid
from lightning_mbo.checkpoint import TRAINING_SETTINGS, CheckpointError, check_matches
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.validation import SettingsError

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / "configs" / "tfbind8" / "ens_mean.yaml")

#: One changed key each, across the model, the data, the trainer and the search.
CHANGES = [
    "--model.init_args.activation=relu",
    "--model.init_args.lr=0.001",
    "--trainer.max_epochs=3",
    "--ascent.steps=5",
    "--ascent.lr=0.2",
]


def _fake_jobs(calls):
    def run_jobs(jobs, executor, folder):
        for job in jobs:
            calls.append(job.cli_args)
            d = Path(job.run_dir)
            d.mkdir(parents=True, exist_ok=True)
            row = {"task": "T", "method": "m", "seed": 0, "score_100th": 0.5, "score_80th": 0.4, "score_50th": 0.3,
                   "wall_seconds": 1.0, "best_visible": 0.4}
            (d / "results.json").write_text(json.dumps({"rows": [row], "provenance": {}}))
            (d / "grid_job.json").write_text(json.dumps({"resolved": job.resolved}))
        return [{} for _ in jobs]
    return run_jobs


@pytest.fixture(scope="module")
def resolved_base() -> str:
    return resolved_config(["fit", "--config", CFG])


@pytest.mark.parametrize("change", CHANGES)
def test_a_single_changed_key_changes_the_resolved_config(change, resolved_base) -> None:
    changed = resolved_config(["fit", "--config", CFG, change])
    assert changed != resolved_base
    key = change.removeprefix("--").split("=")[0].rsplit(".", 1)[-1]
    diff = [b for a, b in zip(resolved_base.splitlines(), changed.splitlines(), strict=False) if a != b]
    assert any(key in line for line in diff), diff


def test_runner_reuses_refuses_and_reruns_by_resolved_config(tmp_path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(benchmark, "run_jobs", _fake_jobs(calls))
    # A stand-in for --print_config: every argument is a line of the "resolved config".
    monkeypatch.setattr(benchmark, "resolved_config", lambda args: "\n".join(args))
    runs = [Run("ens", ["cfg.yaml"], ["--model.init_args.lr=0.0003", "--ascent.steps=200"])]
    run_grid(runs, seeds=[0], output_dir=str(tmp_path))
    assert len(calls) == 1
    run_grid(runs, seeds=[0], output_dir=str(tmp_path))  # same config: reused
    assert len(calls) == 1
    for changed in (["--model.init_args.lr=0.001", "--ascent.steps=200"],
                    ["--model.init_args.lr=0.0003", "--ascent.steps=20"]):
        other = [Run("ens", ["cfg.yaml"], changed)]
        with pytest.raises(SettingsError, match="another config .*is now.*rerun_changed"):
            run_grid(other, seeds=[0], output_dir=str(tmp_path))
        assert len(calls) == 1
    other = [Run("ens", ["cfg.yaml"], ["--model.init_args.lr=0.001", "--ascent.steps=200"])]
    run_grid(other, seeds=[0], output_dir=str(tmp_path), rerun_changed=True)
    assert len(calls) == 2 and "--model.init_args.lr=0.001" in calls[-1]
    run_grid(other, seeds=[0], output_dir=str(tmp_path))  # now the saved config: reused
    assert len(calls) == 2
    # Extra args for every run are part of the key too.
    with pytest.raises(SettingsError, match="rerun_changed"):
        run_grid(other, seeds=[0], output_dir=str(tmp_path), args=["--trainer.max_epochs=3"])


def test_a_finished_run_without_a_record_of_its_config_is_refused(tmp_path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(benchmark, "run_jobs", _fake_jobs(calls))
    monkeypatch.setattr(benchmark, "resolved_config", lambda args: "\n".join(args))
    run_grid([Run("ens", ["cfg.yaml"])], seeds=[0], output_dir=str(tmp_path))
    (tmp_path / "ens" / "seed_0" / "grid_job.json").unlink()
    with pytest.raises(SettingsError, match="no record of its config"):
        run_grid([Run("ens", ["cfg.yaml"])], seeds=[0], output_dir=str(tmp_path))


# --- checkpoints -----------------------------------------------------------------------------

def _ckpt(model) -> dict:
    return {"hyper_parameters": {**dict(model.hparams), "_class_path": "lightning_mbo.methods.surrogate.Surrogate"},
            "datamodule_hyper_parameters": {"task": "TFBind8-Exact-v0"}}


@pytest.mark.parametrize(("key", "saved", "mine"), [
    ("activation", {"activation": "relu"}, {"activation": "leaky_relu"}),
    ("activation", {"activation": "leaky_relu"}, {"activation": "tanh"}),
    ("members", {"members": 2}, {"members": 3}),
    ("hidden", {"hidden": (4,)}, {"hidden": (4, 4)}),
    ("head", {"head": "mse"}, {"head": "gaussian"}),
    ("replicates", {"replicates": 2}, {"replicates": 1}),
    ("select_best", {"select_best": True}, {"select_best": False}),
])
def test_checkpoint_of_other_network_settings_is_refused(key, saved, mine) -> None:
    assert key in TRAINING_SETTINGS
    ckpt = _ckpt(Surrogate(3, **{"hidden": (4,), **saved}))
    model = Surrogate(3, **{"hidden": (4,), **mine})
    with pytest.raises(CheckpointError, match=f"{key} differ"):
        check_matches(ckpt, model, "TFBind8-Exact-v0", "x.ckpt")


def test_checkpoint_of_the_same_settings_is_accepted() -> None:
    model = Surrogate(3, hidden=(4,), activation="relu")
    check_matches(_ckpt(Surrogate(3, hidden=(4,), activation="relu", aggregate="min")), model,
                  "TFBind8-Exact-v0", "x.ckpt")  # a search-time setting may differ
