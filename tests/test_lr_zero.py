"""A search step size of zero (the search silently never moves) is refused, wherever it is set:
the command line's ``--ascent.lr 0`` in one ``lightning_mbo: error:`` line, the callback, the
search settings a method hands out, and every searcher's or method's own step size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_mbo.callbacks.design_ascent import DesignAscent
from lightning_mbo.cli import main
from lightning_mbo.search import Reinforce
from lightning_mbo.search.contract import SearchSettings
from lightning_mbo.validation import SettingsError

REPO = Path(__file__).resolve().parents[1]


def test_cli_refuses_ascent_lr_zero_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "lightning_mbo", "fit", "--config", str(REPO / "configs" / "tfbind8" / "ens_mean.yaml"),
        "--trainer.max_epochs", "1", "--data.max_samples", "1000", "--model.init_args.hidden", "[16, 16]",
        "--ascent.lr", "0", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--trainer.enable_progress_bar", "false"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("lightning_mbo: error:") and "--ascent.lr" in err[0] and "got 0" in err[0]
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before anything trained


@pytest.mark.parametrize("lr", [0, 0.0, -0.1])
def test_callback_and_search_settings_refuse_a_zero_step(lr) -> None:
    with pytest.raises(SettingsError, match="--ascent.lr"):
        DesignAscent(lr=lr)
    with pytest.raises(SettingsError, match="--ascent.lr"):
        SearchSettings(steps=10, lr=lr)
    with pytest.raises(SettingsError, match="--ascent.lr"):
        SearchSettings(steps=10, lr=lr, optimizer="adam")


def test_searcher_step_sizes_refuse_zero() -> None:
    with pytest.raises(SettingsError, match="lr"):
        Reinforce(lr=0)
    from lightning_mbo.search import MINs  # noqa: PLC0415

    with pytest.raises(SettingsError, match="lr"):
        MINs(lr=0)
    from lightning_mbo.search.cbas import CbAS  # noqa: PLC0415

    with pytest.raises(SettingsError, match="vae_lr"):
        CbAS(vae_lr=0)


def test_method_step_sizes_refuse_zero() -> None:
    from lightning_mbo.methods.coms import COMs  # noqa: PLC0415
    from lightning_mbo.methods.ict import ICT  # noqa: PLC0415
    from lightning_mbo.methods.surrogate import Surrogate  # noqa: PLC0415
    from lightning_mbo.methods.tri_mentoring import TriMentoring  # noqa: PLC0415

    with pytest.raises(SettingsError, match="particle_lr"):
        COMs(3, hidden=(4,), particle_lr=0)
    with pytest.raises(SettingsError, match="lr"):
        Surrogate(3, hidden=(4,), lr=0)
    with pytest.raises(SettingsError, match="finetune_lr"):
        ICT(3, hidden=(4,), finetune_lr=0)
    with pytest.raises(SettingsError, match="lr"):
        TriMentoring(3, hidden=(4,), lr=0)
