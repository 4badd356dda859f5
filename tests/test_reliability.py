"""Bad input, interrupted runs and traceable results, as a user meets them on the command line."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_mbo.checkpoint import CheckpointError
from lightning_mbo.cli import EXIT_SIGTERM, main
from lightning_mbo.validation import SettingsError
from tests.conftest import read_result

REPO = Path(__file__).resolve().parents[1]
ENS_MEAN = REPO / "configs" / "tfbind8" / "ens_mean.yaml"
TRI = REPO / "configs" / "tfbind8" / "tri_mentoring.yaml"
QUICK = REPO / "configs" / "quick.yaml"
# A small real run: 1000 visible TFBind8 rows, a 2x16 ensemble of 5, 2 epochs.
SMALL = ["--config", str(ENS_MEAN), "--config", str(QUICK), "--trainer.max_epochs", "2", "--data.max_samples",
         "1000", "--model.init_args.hidden", "[16, 16]", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])


def _command_line(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``python -m lightning_mbo <args>`` as the command line does (in-process): exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["lightning-mbo", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """One SMALL fit; its run folder."""
    root = tmp_path_factory.mktemp("small")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["lightning-mbo"])
        cli = main(["fit", *SMALL, "--trainer.logger.init_args.save_dir", str(root / "logs")])
    return Path(cli.trainer.log_dir)


# --- results.json: one shape, provenance, the starting designs' score, readable by others ------
def test_results_have_one_shape_with_provenance(small_run: Path) -> None:
    data = json.loads((small_run / "results.json").read_text())
    assert set(data) == {"rows", "provenance"}
    (row,) = data["rows"]
    assert (row["task"], row["method"], row["seed"], row["replicate"]) == ("TFBind8-Exact-v0", "ens_mean", 0, 0)
    # The unmodified top-128 of the 1000 visible rows, scored by the oracle: at most D(best) 0.439.
    assert 0.43 < row["start_score_100th"] <= row["best_visible"] + 1e-6
    assert row["start_score_100th"] >= row["start_score_80th"] >= row["start_score_50th"]
    prov = data["provenance"]
    assert prov["versions"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert {"lightning_mbo", "pytorch-lightning", "numpy", "python"} <= set(prov["versions"])
    assert prov["config_files"] == [str(ENS_MEAN), str(QUICK)]
    assert prov["config_saved"] == str(small_run / "config.yaml") and (small_run / "config.yaml").is_file()
    assert prov["data"]["origin"] == "shipped with lightning_mbo" and len(prov["data"]["sha256"]) == 64
    assert prov["device"] == "cpu" and prov["checkpoint"] is None
    assert "commit" in prov  # None outside a git tree


def test_result_files_are_readable_by_others(small_run: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.json", "designs.npy", "scores.npy"):
        mode = stat.S_IMODE((small_run / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_ascend_records_its_checkpoint(small_run: Path, tmp_path: Path) -> None:
    ckpt = small_run / "checkpoints" / "last.ckpt"
    cli = main(["ascend", *SMALL, "--ckpt_path", str(ckpt), "--trainer.logger.init_args.save_dir", str(tmp_path)])
    got = read_result(Path(cli.trainer.log_dir))
    assert got["provenance"]["checkpoint"] == str(ckpt.resolve())
    assert got["score_100th"] == read_result(small_run)["score_100th"]


# --- ascend: the checkpoint must be the config's run and a readable checkpoint -----------------
def test_ascend_refuses_a_checkpoint_of_another_method(small_run: Path, tmp_path: Path) -> None:
    ckpt = small_run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"holds Surrogate\(members=5.*but the config builds TriMentoring"):
        main(["ascend", "--config", str(TRI), "--data.max_samples", "1000", "--ckpt_path", str(ckpt),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])
    with pytest.raises(CheckpointError, match="hidden differ"):
        main(["ascend", *SMALL, "--model.init_args.hidden", "[32, 32]", "--ckpt_path", str(ckpt),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])
    assert not list(tmp_path.rglob("results.json"))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncate"])
def test_ascend_on_an_unreadable_file_is_one_line(content, small_run: Path, tmp_path: Path, monkeypatch, capsys):
    bad = tmp_path / "bad.ckpt"
    if content == "truncate":
        data = (small_run / "checkpoints" / "last.ckpt").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    code, err = _command_line(monkeypatch, capsys, "ascend", *SMALL, "--ckpt_path", str(bad))
    assert code == 2
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("lightning_mbo: error:") and str(bad) in line and "not a readable checkpoint" in line
    assert "Traceback" not in err


def test_ascend_without_or_with_a_missing_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _command_line(monkeypatch, capsys, "ascend", *SMALL)
    assert code == 2 and "ascend needs --ckpt_path" in err and "Traceback" not in err
    code, err = _command_line(monkeypatch, capsys, "ascend", *SMALL, "--ckpt_path", str(tmp_path / "nope.ckpt"))
    assert code == 2 and "does not exist" in err


def test_checkpoint_with_code_is_not_unpickled(tmp_path: Path) -> None:
    """``weights_only=True``: an object that would run code on load is refused, not executed."""
    from lightning_mbo.checkpoint import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="posix.system, outside the safe-loading allow-list"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


# --- settings: refused before anything is built or written ------------------------------------
@pytest.mark.parametrize(("bad", "says"), [
    (["--model.init_args.lr", "-0.1"], "lr"),
    (["--model.init_args.lr", "0"], "trains nothing"),
    (["--trainer.max_epochs", "0"], "max_epochs"),
    (["--trainer.max_epochs", "-3"], "max_epochs"),
    (["--data.batch_size", "0"], "batch_size"),
    (["--ascent.lr", "-0.5"], "--ascent.lr"),
    (["--ascent.steps", "-1"], "--ascent.steps"),
    (["--model.init_args.ignite.rho", "0"], "ignite.rho"),
])
def test_bad_settings_exit_2_with_one_line(bad, says, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _command_line(monkeypatch, capsys, "fit", *SMALL, *bad)
    assert code == 2, err
    assert says in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_optimizer_cannot_replace_the_methods_own(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _command_line(monkeypatch, capsys, "fit", *SMALL, "--optimizer", "SGD")
    assert code == 2 and "optimizer" in err
    assert not any(tmp_path.iterdir())


# --- settings that follow from others ------------------------------------------------------------
def test_seed_everything_also_seeds_the_data(tmp_path) -> None:
    cli = main([*SMALL, "--seed_everything", "3", "--trainer.logger.init_args.save_dir", str(tmp_path)], run=False)
    assert cli.datamodule.seed == 3
    explicit = main([*SMALL, "--seed_everything", "3", "--data.seed", "5",
                     "--trainer.logger.init_args.save_dir", str(tmp_path)], run=False)
    assert explicit.datamodule.seed == 5


def test_default_root_dir_moves_the_outputs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", *SMALL, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "elsewhere")])
    assert Path(cli.trainer.log_dir) == tmp_path / "elsewhere" / "tfbind8" / "ens_mean" / "version_0"
    assert (Path(cli.trainer.log_dir) / "results.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


def test_no_progress_bar_when_output_is_not_a_terminal(tmp_path) -> None:
    cli = main([*SMALL, "--trainer.logger.init_args.save_dir", str(tmp_path)], run=False)
    assert not sys.stderr.isatty() and cli.trainer.progress_bar_callback is None


# --- interrupted runs ------------------------------------------------------------------------------
def test_sigterm_saves_a_checkpoint_exits_nonzero_and_resumes_in_the_same_folder(tmp_path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lightning_mbo", "fit", *SMALL, "--trainer.max_epochs", "400",
           "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    run = tmp_path / "logs" / "tfbind8" / "ens_mean" / "version_0"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a few more epochs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_SIGTERM, err[-2000:]
    assert "interrupted by SIGTERM" in err and "last.ckpt" in err
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    stopped_at = ckpt["epoch"]
    assert 0 < stopped_at < 399
    assert not (run / "results.json").exists()  # an interrupted run hands back nothing
    # Resume: same folder, total fit time, results written.
    resume = [*cmd[:-1], str(tmp_path / "logs"), "--trainer.max_epochs", str(stopped_at + 2),
              "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    done = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "logs" / "tfbind8" / "ens_mean" / "version_1").exists()
    result = read_result(run)
    assert result["fit_seconds"] > 1.0  # includes the part before the interruption
    assert "normalised score 100th" in done.stdout  # the result line goes to stdout


# --- tools -------------------------------------------------------------------------------------------
def test_results_collects_every_run_below_a_folder(small_run: Path, capsys) -> None:
    main(["results", str(small_run.parent)])
    out = capsys.readouterr().out
    assert "| TFBind8-Exact-v0 | ens_mean | ens_mean | 1 | 1 |" in out
    with pytest.raises(SettingsError, match="no results.json"):
        main(["results", str(small_run / "checkpoints")])


def test_bare_benchmark_is_a_usage_error(monkeypatch, capsys) -> None:
    code, err = _command_line(monkeypatch, capsys, "benchmark")
    assert code == 2 and "usage" in err.lower()


def test_ascend_refuses_a_checkpoint_of_another_task(small_run: Path, tmp_path: Path) -> None:
    from lightning_mbo.tasks import QUADRATIC

    ckpt = small_run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"on TFBind8-Exact-v0 but the config builds .* on " + QUADRATIC):
        main(["ascend", *SMALL, "--data.task", QUADRATIC, "--data.max_samples", "0", "--ckpt_path", str(ckpt),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])


def test_resume_refuses_a_checkpoint_of_another_network(small_run: Path, tmp_path: Path) -> None:
    ckpt = small_run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="members differ"):
        main(["fit", *SMALL, "--model.init_args.members", "3", "--ckpt_path", str(ckpt),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])
