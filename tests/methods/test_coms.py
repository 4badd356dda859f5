"""COMs as a method: its training step against an independent statement of the released one,
α's dual step, the search it declares, quick CLI fits of its configs, and bad settings."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_mbo.cli import main
from lightning_mbo.methods import COMs
from lightning_mbo.search import SearchData
from lightning_mbo.validation import SettingsError


def _released_step(model: COMs, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The released ``train_step`` for one network, written out here: the model's weight gradients
    and ``d alpha_loss / d log alpha``, from a deep copy (the module under test is not used)."""
    ref = copy.deepcopy(model)
    params = [p for n, p in ref.named_parameters() if n != "log_alpha"]
    eta, steps = model.hparams.particle_lr * math.sqrt(x.shape[-1]), model.hparams.particle_steps
    x_neg = x.clone()
    for _ in range(steps):
        x_neg.requires_grad_(True)
        (g,) = torch.autograd.grad(ref(x_neg)[0].sum(), x_neg)
        x_neg = (x_neg + eta * g).detach()
    d_pos, d_neg = ref(x)[0], ref(x_neg)[0]
    over = d_neg - d_pos
    alpha = ref.log_alpha.exp()
    total = ((y - d_pos) ** 2 + alpha.detach()[:, None] * over).mean()
    weight_grads = torch.autograd.grad(total, params)
    alpha_loss = (alpha * model.hparams.overestimation_limit - alpha * over.detach().mean()).mean()
    (alpha_grad,) = torch.autograd.grad(alpha_loss, ref.log_alpha)
    return list(weight_grads), alpha_grad


@pytest.mark.parametrize("tau", [0.0, 5.0])
def test_training_gradients_are_the_released_ones(tau):
    torch.manual_seed(0)
    model = COMs(input_dim=3, hidden=[8, 8], overestimation_limit=tau, particle_lr=0.3, particle_steps=4)
    x, y = torch.randn(1, 16, 3), torch.randn(1, 16)
    weight_grads, alpha_grad = _released_step(model, x, y)
    losses, mean, logs = model.training_losses(x, y, None, None)
    losses.sum().backward()
    got = [p.grad for n, p in model.named_parameters() if n != "log_alpha"]
    for a, b in zip(got, weight_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(model.log_alpha.grad, alpha_grad.reshape(1), atol=1e-7)
    assert torch.allclose(logs["train/alpha"], torch.tensor([0.1]))
    assert torch.equal(mean, model(x)[0])


def test_alpha_rises_over_the_limit_and_falls_with_slack():
    torch.manual_seed(0)
    x, y = torch.randn(1, 32, 3), torch.randn(1, 32)
    moved = {}
    for tau in (0.0, 100.0):
        model = COMs(input_dim=3, hidden=[8, 8], overestimation_limit=tau, particle_lr=0.5, particle_steps=5)
        _, alpha_opt = model.configure_optimizers()
        for _ in range(3):
            alpha_opt.zero_grad()
            losses, _, logs = model.training_losses(x, y, None, None)
            assert logs["train/overestimation"].item() > 0  # ascent negatives are over-estimated
            losses.sum().backward()
            alpha_opt.step()
        moved[tau] = model.alpha.item()
    assert moved[0.0] > 0.1 > moved[100.0]


def test_ignite_constrains_the_weights_not_alpha():
    model = COMs(input_dim=3, hidden=[4])
    names = {id(p) for p in model.constrained_parameters()}
    assert id(model.log_alpha) not in names
    assert names == {id(p) for n, p in model.named_parameters() if n != "log_alpha"}
    model_opt, alpha_opt = model.configure_optimizers()
    assert [p for g in alpha_opt.param_groups for p in g["params"]] == [model.log_alpha]
    assert alpha_opt.defaults["lr"] == 0.01 and model_opt.defaults["lr"] == 3e-4


def test_search_is_fifty_plain_steps_of_two_root_d():
    model = COMs(input_dim=24, hidden=[4])
    data = SearchData(x=torch.zeros(5, 24), y=torch.zeros(5), discrete=True)
    s = model.search_defaults(data)
    assert (s.steps, s.optimizer) == (50, "sgd") and s.lr == pytest.approx(2.0 * math.sqrt(24))  # 9.80
    assert model.method_name() == "coms"
    assert isinstance(model.net, nn.Module) and model.head == "mse"


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"overestimation_limit": -1.0}, "overestimation_limit"),
    ({"particle_steps": 0}, "particle_steps"),
    ({"alpha_init": 0.0}, "alpha_init"),
    ({"particle_lr": 0.0}, "particle_lr"),
    ({"alpha_lr": -0.1}, "alpha_lr"),
])
def test_bad_settings_name_the_option(kwargs, says):
    with pytest.raises(SettingsError, match=says):
        COMs(input_dim=3, **kwargs)


REPO = Path(__file__).resolve().parents[2]
SMALL = ["--config", str(REPO / "configs" / "quick_coms.yaml"), "--model.init_args.hidden", "[16, 16]",
         "--model.init_args.particle_steps", "5"]


@pytest.mark.parametrize("config", ["tfbind8/coms.yaml", ["tfbind8/coms.yaml", "ignite.yaml"],
                                    "tfbind8/coms_upstream.yaml"])
def test_quick_fit_of_each_config(config, quick_fit):
    run, row = quick_fit(config, *SMALL)
    assert row["method"] == ("coms+ignite" if "ignite.yaml" in config else "coms")
    assert row["ascent"] == {"steps": 50, "lr": pytest.approx(2.0 * math.sqrt(24)), "optimizer": "sgd"}
    assert 0 < row["coms"]["alpha"][0] and row["coms"]["overestimation_limit"] == 2.0
    assert row["score_100th"] > 0.3
    if "ignite.yaml" in config:
        assert len(row["ignite"]["lambda"]) == 1


@pytest.mark.parametrize("config", ["tfbind10/coms.yaml", ["tfbind10/coms.yaml", "ignite.yaml"]])
def test_quick_fit_of_each_tfbind10_config(config, quick_fit, tfbind10_every_design):
    _, row = quick_fit(config, *SMALL, "--data.data_dir", str(tfbind10_every_design))
    assert row["task"] == "TFBind10-Exact-v0" and row["ascent"]["lr"] == pytest.approx(2.0 * math.sqrt(30))  # 10.95
    assert 0 < row["coms"]["alpha"][0]


def test_same_seed_same_scores(quick_fit):
    _, a = quick_fit(["tfbind8/coms.yaml", "ignite.yaml"], *SMALL)
    _, b = quick_fit(["tfbind8/coms.yaml", "ignite.yaml"], *SMALL)
    assert a["score_100th"] == b["score_100th"] and a["coms"]["alpha"] == b["coms"]["alpha"]
    assert a["ignite"]["lambda"] == b["ignite"]["lambda"]


def test_bad_setting_on_the_command_line_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-mbo", "fit", "--config", str(REPO / "configs/tfbind8/coms.yaml"),
                                      "--model.init_args.overestimation_limit", "-2"])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and "overestimation_limit" in err[-1]
    assert not any(tmp_path.iterdir())
