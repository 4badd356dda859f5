"""Tests of the ICT LightningModule (lightning_mbo.methods.ict; Yuan et al., NeurIPS 2023).

The equations and the two fine-tuning backends have their own tests (tests/functional/test_ict.py).
Here: the module's settings and their errors, the fine-tuning it runs before search (copies of the
trained proxies from the best training design; the module unchanged), the objective (the mean of
the fine-tuned copies), replicates and process splits, seeds, its results summary, the configs and
quick CPU fits through the command line. Tiny proxies (hidden (16, 16)) on a few hundred TFBind8 rows.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from lightning_mbo.cli import main
from lightning_mbo.data.datamodule import MBODataModule
from lightning_mbo.functional.tri_mentoring import predict_stacked
from lightning_mbo.methods import ict as ict_module
from lightning_mbo.methods.ict import ICT
from lightning_mbo.search import SearchData, SearchSettings, gradient_ascent
from lightning_mbo.tasks import subsample_indices
from lightning_mbo.validation import SettingsError
from tests.conftest import read_result, shipped_tfbind8

REPO = Path(__file__).resolve().parents[2]
F64 = torch.float64
HIDDEN = (16, 16)
SMALL = {"finetune_steps": 3, "neighbours": 16, "num_coteaching": 4, "alpha": 1e-2}
C = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dm() -> MBODataModule:
    """300 shipped TFBind8 rows in float64."""
    return shipped_tfbind8(300, F64, val_size=0.1)


@pytest.fixture(scope="module")
def x0(dm: MBODataModule) -> Tensor:
    return dm.starting_designs(2 * C).to(F64)


def make(dm: MBODataModule, **kwargs: Any) -> ICT:
    torch.manual_seed(0)
    return ICT(dm.input_dim, hidden=HIDDEN, **{**SMALL, "finetune_seed": 0, **kwargs}).to(F64).eval()


def scores(model: ICT, dm: MBODataModule, x: Tensor, ids: list[int] | None = None, total: int | None = None) -> Tensor:
    ids_t = torch.arange(len(x)) if ids is None else torch.tensor(ids)
    return model.search_objective(x, dm.search_data(), ids_t, total or len(x)).score(x).detach()


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


def test_defaults_are_the_released_settings(dm: MBODataModule) -> None:
    model = ICT(dm.input_dim, hidden=HIDDEN)
    hp = model.hparams
    assert (hp.members, hp.activation, hp.init, hp.lr, hp.lr_schedule, hp.select_best) == (3, "relu", "torch", 0.1,
                                                                                             "cosine", True)
    assert model.head == "mse" and ICT.per_member_split
    assert (hp.mode, hp.finetune_steps, hp.finetune_lr, hp.neighbours, hp.noise) == ("released", 100, None, 128, 0.1)
    assert (hp.num_coteaching, hp.alpha, hp.beta, hp.clip, hp.reweight_mode) == (8, 1e-3, 0.3, 0.2, "full")
    assert hp.reweighting and hp.fine_tune and hp.backend == "batched"
    assert model.search_defaults(dm.search_data()) == SearchSettings(100, 0.1, "adam")
    assert model.search_defaults(SearchData(dm.x, dm.y, discrete=False)) == SearchSettings(100, 1e-3, "adam")
    assert model.method_name() == "ict"
    assert ICT(dm.input_dim, hidden=HIDDEN, mode="fixed").method_name() == "ict_fixed"
    assert ICT(dm.input_dim, hidden=HIDDEN, reweighting=False).method_name() == "ict_no_reweighting"
    assert ICT(dm.input_dim, hidden=HIDDEN, fine_tune=False).method_name() == "ict_no_fine_tune"


BAD = {
    "members": 2, "num_coteaching": 200, "neighbours": 1, "mode": "paper", "backend": "vmap",
    "reweight_mode": "top64", "finetune_lr": 0.0, "alpha": 0.0, "beta": -0.1, "noise": -1.0, "finetune_steps": -1,
    "clip": -0.2,
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_settings_name_the_option(dm: MBODataModule, name: str) -> None:
    with pytest.raises(SettingsError, match=rf"--model\.init_args\.{name}\b"):
        ICT(dm.input_dim, hidden=HIDDEN, **{name: BAD[name]})


def test_bad_setting_on_the_command_line_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-mbo", "fit", "--config", str(REPO / "configs/tfbind8/ict.yaml"),
                                      "--model.init_args.num_coteaching", "500"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "num_coteaching (--model.init_args.num_coteaching) must be <= neighbours (128), got 500" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# Fine-tuning before search
# ----------------------------------------------------------------------------------------------


def test_fine_tuning_starts_at_the_best_design_and_leaves_the_module_unchanged(
        dm: MBODataModule, x0: Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Tensor, ...]] = []
    real = ict_module.finetune_batched

    def spy(params, x_start, x_val, y_val, noise, settings, *args):
        seen.append((x_start, x_val, y_val, noise, settings))
        return real(params, x_start, x_val, y_val, noise, settings, *args)

    monkeypatch.setattr(ict_module, "finetune_batched", spy)
    model = make(dm)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    first = scores(model, dm, x0[:C])
    x_start, x_val, y_val, noise, settings = seen[0]
    best = dm.x[dm.y.argmax()]
    assert torch.equal(x_start, best.expand(1, -1))  # the best training design (ICT.py:36-39)
    assert float(dm.task.y.max()) == float(dm.task.top_k(1)[1][0])
    assert sorted(map(tuple, x_val.tolist())) == sorted(map(tuple, dm.x.tolist()))  # reweight_mode full: every row
    assert noise.shape == (1, 3, 16, 1)  # released: one scalar per neighbour
    assert (settings.x_lr, settings.select, settings.mode) == (0.1, 4, "released")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    # The copies moved away from the trained proxies, and a second search starts from them again.
    plain = model.predict_designs(x0[:C]).detach()
    assert float((first - plain).abs().max()) > 1e-4
    assert torch.equal(scores(model, dm, x0[:C]), first)
    # half: the better half of the rows enters the meta objective.
    scores(make(dm, reweight_mode="half"), dm, x0[:C])
    assert len(seen[-1][2]) == len(dm.y) // 2 and float(seen[-1][2].min()) >= float(dm.y.median())


def test_objective_is_the_mean_of_the_fine_tuned_copies(dm: MBODataModule, x0: Tensor) -> None:
    model = make(dm)
    tuned = model.finetune_copies(torch.tensor([0]), dm.search_data())
    assert tuned.params["layers.0.weight"].shape == (1, 3, dm.input_dim, HIDDEN[0])
    expected = predict_stacked(tuned.params, x0[:C].unsqueeze(0), "relu")[0].mean(0)
    torch.testing.assert_close(scores(model, dm, x0[:C]), expected.detach(), rtol=0, atol=1e-12)
    # Search then climbs it with the search defaults (Adam 0.1), independently per candidate.
    search = model.search_objective(x0[:C], dm.search_data(), torch.arange(C), C)
    assert search.before_step is None
    result = gradient_ascent(x0[:C], search.score, 5, 0.1, "adam")
    assert bool((result.trajectory[-1] > result.trajectory[0]).all())


def test_without_fine_tuning_search_is_the_mean_ensemble(dm: MBODataModule, x0: Tensor) -> None:
    model = make(dm, fine_tune=False)
    torch.testing.assert_close(scores(model, dm, x0[:C]), model.net(x0[:C])[..., 0].mean(0).detach(), rtol=0,
                               atol=1e-12)
    assert "ict" not in model.method_summary(0)


@pytest.fixture
def float64_default():
    """torch.optim.Adam (the higher backend's real steps) counts its steps in the default dtype."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(dtype)


@pytest.mark.parametrize("mode", ["released", "fixed"])
def test_backends_agree(dm: MBODataModule, x0: Tensor, mode: str, float64_default: None) -> None:
    batched = make(dm, mode=mode)
    higher = make(dm, mode=mode, backend="higher")
    torch.testing.assert_close(scores(higher, dm, x0[:C]), scores(batched, dm, x0[:C]), rtol=1e-9, atol=1e-11)
    assert batched.method_summary(0)["ict"] == pytest.approx(higher.method_summary(0)["ict"])


def test_replicates_fine_tune_their_own_copies_however_candidates_are_split(
        dm: MBODataModule, x0: Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    noises: list[Tensor] = []
    real = ict_module.finetune_batched
    monkeypatch.setattr(ict_module, "finetune_batched", lambda *a: noises.append(a[4]) or real(*a))
    model = make(dm, replicates=2)
    x = x0[:C].repeat(2, 1)  # replicate 0: candidates 0..3, replicate 1: 4..7
    together = scores(model, dm, x)
    assert float((together[:C] - together[C:]).abs().max()) > 1e-4  # own proxies, own noise
    assert noises[0].shape[0] == 2 and not torch.equal(noises[0][0], noises[0][1])
    for part in ([0, 1, 2, 3], [4, 5, 6, 7], [1, 6], [0, 2, 3, 4, 5, 7]):
        torch.testing.assert_close(scores(make(dm, replicates=2), dm, x[part], part, 2 * C), together[part],
                                   rtol=0, atol=1e-12)
    summaries = [model.method_summary(r)["ict"] for r in (0, 1)]
    assert summaries[0] != summaries[1]


def test_same_seed_same_numbers_other_seed_or_mode_other_numbers(dm: MBODataModule, x0: Tensor) -> None:
    first = scores(make(dm), dm, x0[:C])
    assert torch.equal(scores(make(dm), dm, x0[:C]), first)
    for other in ({"finetune_seed": 1}, {"mode": "fixed"}, {"num_coteaching": 8}, {"reweighting": False}):
        assert float((scores(make(dm, **other), dm, x0[:C]) - first).abs().max()) > 1e-9, other


def test_summary_reports_the_mode_and_the_released_weights(dm: MBODataModule, x0: Tensor) -> None:
    """Released: every weight 1 ± β/n (0.0375 at the released β 0.3, n 8); fixed: per-sample weights."""
    released = make(dm, num_coteaching=8, beta=0.3)
    scores(released, dm, x0[:C])
    summary = released.method_summary(0)["ict"]
    assert summary["mode"] == "released"
    assert summary["weight_max"] == pytest.approx(1.0375) or summary["weight_min"] == pytest.approx(0.9625)
    assert 0.9625 - 1e-9 <= summary["weight_min"] and summary["weight_max"] <= 1.0375 + 1e-9
    assert 0 < summary["weight_abs_dev"] <= 0.0375 + 1e-9
    fixed = make(dm, num_coteaching=8, beta=0.3, mode="fixed")
    scores(fixed, dm, x0[:C])
    assert fixed.method_summary(0)["ict"]["mode"] == "fixed"
    assert fixed.method_summary(0)["ict"]["weight_abs_dev"] != pytest.approx(summary["weight_abs_dev"])
    assert math.isfinite(summary["path_predicted_final"])


# ----------------------------------------------------------------------------------------------
# Data: the released TFBind10 subsample
# ----------------------------------------------------------------------------------------------


def test_stride_floor_is_the_released_tfbind10_subsample() -> None:
    rng = np.random.default_rng(0)
    y = rng.permutation(1000).astype(np.float32)
    idx = np.arange(1000)
    got = subsample_indices(idx, y, 7, "stride_floor", seed=0)
    order = np.argsort(y)
    assert sorted(got.tolist()) == sorted(order[np.arange(0, 1000, 1000 // 7)[:7]].tolist())  # utils.py:68-70
    assert sorted(y[got].tolist()) == [0, 142, 284, 426, 568, 710, 852]  # the top rows past 852 are left out
    assert set(got.tolist()) != set(subsample_indices(idx, y, 7, "stride", seed=0).tolist())


def test_tfbind10_configs(tfbind10_of_any_size: None, tfbind10_shards, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    root, _, _ = tfbind10_shards
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])
    for ignite in (False, True):
        overlay = ["--config", str(REPO / "configs/ignite.yaml")] if ignite else []
        cli = main(["--config", str(REPO / "configs/tfbind10/ict.yaml"), *overlay, "--data.data_dir", str(root),
                    "--trainer.logger", "false"], run=False)
        data = cli.datamodule.hparams
        assert (data.max_samples, data.subsample, data.batch_size, data.val_size) == (50000, "stride_floor", 128, 0.1)
        assert isinstance(cli.model, ICT) and (cli.model.constraint is not None) == ignite
        assert cli.model.hparams.num_coteaching == 8 and cli.model.hparams.mode == "released"


# ----------------------------------------------------------------------------------------------
# The command line: one quick fit per config
# ----------------------------------------------------------------------------------------------

QUICK_ARGS = ["--model.init_args.hidden", "[16,16]", "--model.init_args.finetune_steps", "4",
              "--ascent.steps", "5"]


@pytest.mark.parametrize(("config", "method"), [("tfbind8/ict.yaml", "ict"),
                                                (["tfbind8/ict.yaml", "ignite.yaml"], "ict+ignite")])
def test_cli_quick_fit(quick_fit, config: str | list[str], method: str) -> None:
    run, res = quick_fit(config, *QUICK_ARGS)
    assert res["method"] == method and res["task"] == "TFBind8-Exact-v0"
    assert res["ascent"] == {"steps": 5, "lr": 0.1, "optimizer": "adam"}
    assert res["ict"]["mode"] == "released" and 0.9625 - 1e-6 <= res["ict"]["weight_min"]
    assert res["ict"]["weight_max"] <= 1.0375 + 1e-6
    assert all(math.isfinite(res[k]) for k in ("score_100th", "score_50th", "mean_predicted_final"))
    assert np.load(run / "designs.npy").shape == (128, 8)
    if method.endswith("+ignite"):
        assert len(res["ignite"]["lambda"]) == 3  # one λ per proxy
    else:
        assert "ignite" not in res


def test_cli_fixed_mode_and_ascend_reproduces_fit(quick_fit, tmp_path: Path) -> None:
    run, res = quick_fit("tfbind8/ict.yaml", *QUICK_ARGS, "--model.init_args.mode", "fixed")
    assert res["method"] == "ict_fixed" and res["ict"]["mode"] == "fixed"
    # Re-running search on the checkpoint fine-tunes fresh copies with the same noise: the same row.
    main(["ascend", "--config", str(REPO / "configs/tfbind8/ict.yaml"), *QUICK_ARGS, "--model.init_args.mode",
          "fixed", "--data.max_samples", "1000", "--trainer.logger.init_args.save_dir", str(tmp_path / "again"),
          "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    (again,) = [p.parent for p in (tmp_path / "again").rglob("results.json")]
    repeat = read_result(again)
    assert repeat["mean_predicted_final"] == pytest.approx(res["mean_predicted_final"], rel=1e-6)
    assert repeat["score_100th"] == res["score_100th"] and repeat["ict"] == pytest.approx(res["ict"])
