"""Tests of the gradient-ascent surrogates (lightning_mbo.methods.surrogate): what design ascent
climbs (Ens-Mean's mean, Ens-Min's minimum), design-baselines' step size, and the constraint's
reported ρ‖∇h‖.

design-baselines (Trabucco et al., "Design-Bench", ICML 2022): 200 plain steps
``x ← x + 0.01 √D ∇f(x)`` on the mean (Ens-Mean) or the minimum (Ens-Min) of the members'
predicted means.
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_mbo.callbacks import DesignAscent
from lightning_mbo.methods import Ignite, Surrogate
from lightning_mbo.methods.ignite import GradNormConstraint
from lightning_mbo.search import SearchData, SearchSettings

D = 24  # TFBind8's flattened logits: 8 positions x 3


def _ensemble(aggregate: str, members: int = 3, replicates: int = 1) -> Surrogate:
    torch.manual_seed(0)
    return Surrogate(D, members=members, hidden=(16, 16), aggregate=aggregate, replicates=replicates).eval()


@pytest.mark.parametrize(("aggregate", "reduce"), [("min", lambda m: m.min(0).values), ("mean", lambda m: m.mean(0))])
def test_ascent_objective_is_the_members_min_or_mean(aggregate, reduce) -> None:
    model = _ensemble(aggregate)
    x = torch.randn(7, D)
    # Each member's predicted mean, one member at a time (not the stacked forward).
    params = dict(model.net.named_parameters())
    per_member = []
    for m in range(3):
        h = x
        for i in range(3):
            h = h @ params[f"layers.{i}.weight"][m] + params[f"layers.{i}.bias"][m]
            if i < 2:
                h = torch.nn.functional.leaky_relu(h, 0.3)
        per_member.append(h[:, 0])
    stacked = torch.stack(per_member).detach()
    expected = reduce(stacked)
    objective = model.search_objective(x, None, torch.arange(7), 7)
    assert objective.before_step is None
    torch.testing.assert_close(objective.score(x), expected, rtol=1e-6, atol=1e-6)
    # The members disagree, so min and mean differ: the check can tell them apart.
    assert float((stacked.min(0).values - stacked.mean(0)).abs().min()) > 1e-4


def test_ens_min_gradient_follows_the_lowest_member() -> None:
    model = _ensemble("min")
    x = torch.randn(5, D, requires_grad=True)
    objective = model.search_objective(x.detach(), None, torch.arange(5), 5)
    (g,) = torch.autograd.grad(objective.score(x).sum(), x)
    mean, _ = model(x)
    lowest = mean.argmin(0)
    for row in range(5):
        (g_m,) = torch.autograd.grad(mean[lowest[row], row], x, retain_graph=True)
        torch.testing.assert_close(g[row], g_m[row])


def test_replicates_aggregate_their_own_members_only() -> None:
    model = _ensemble("min", members=2, replicates=3)
    x = torch.randn(6, D)
    replicate = torch.tensor([0, 0, 1, 1, 2, 2])
    mean, _ = model(x)  # (6 networks, 6 designs)
    expected = torch.stack([mean[2 * r:2 * r + 2, i].min() for i, r in enumerate(replicate.tolist())])
    torch.testing.assert_close(model.predict_designs(x, replicate), expected)


def test_design_baselines_step_size_is_one_hundredth_of_sqrt_d() -> None:
    model = Surrogate(D, hidden=(8,))
    data = SearchData(torch.zeros(3, D), torch.zeros(3), discrete=True)
    searcher = DesignAscent().searcher.configure(model.search_defaults(data))
    assert searcher.settings() == SearchSettings(steps=200, lr=0.01 * math.sqrt(24), optimizer="sgd").as_dict()
    assert searcher.lr == pytest.approx(0.0489898, rel=1e-5)
    wide = SearchData(torch.zeros(3, 300), torch.zeros(3), discrete=False)
    assert Surrogate(300, hidden=(8,)).search_defaults(wide).lr == pytest.approx(0.01 * math.sqrt(300))
    # What the search callback is given wins over the method's defaults.
    given = DesignAscent(lr=0.2, steps=3).searcher.configure(model.search_defaults(data))
    assert given.settings() == SearchSettings(3, 0.2, "sgd").as_dict()


def test_reported_rho_grad_norm_is_rho_times_the_norm() -> None:
    """``rho_grad_norm`` is ρ times the moving average (0.99) of ‖∇h‖, per member."""
    constraint = GradNormConstraint(Ignite(rho=0.2, eps=0.1, lambda_lr=0.5), members=2)
    violation = constraint.update_lambda(torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(violation, torch.tensor([0.2 * 3 - 0.1, 0.2 * 5 - 0.1]))
    summary = constraint.summary()
    assert summary["rho_grad_norm"] == pytest.approx([0.6, 1.0])
    assert summary["lambda"] == pytest.approx([1e-3 + 0.5 * 0.5, 1e-3 + 0.5 * 0.9])
    constraint.update_lambda(torch.tensor([1.0, 1.0]))
    ema = [0.99 * 3 + 0.01 * 1, 0.99 * 5 + 0.01 * 1]
    assert constraint.summary()["rho_grad_norm"] == pytest.approx([0.2 * ema[0], 0.2 * ema[1]])


def test_method_summary_reports_each_replicates_own_members() -> None:
    model = Surrogate(D, members=2, replicates=2, hidden=(8,), ignite=Ignite(rho=0.5))
    model.constraint.update_lambda(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert model.method_summary(1)["ignite"]["rho_grad_norm"] == pytest.approx([1.5, 2.0])
    assert model.method_summary(0)["ignite"]["rho_grad_norm"] == pytest.approx([0.5, 1.0])


def test_bootstrap_weighted_member_loss_is_sum_w_loss_over_sum_w() -> None:
    model = Surrogate(D, members=2, hidden=(8,), head="mse")
    mean = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    w = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    losses = model.member_losses(mean, None, y, rows=3, weights=(w, w.sum(1)))
    torch.testing.assert_close(losses, torch.tensor([(2 * 1 + 1 * 9) / 3, (1 + 4 + 9) / 3]))
    # One rank's share of a global batch: world * Σ_local w·loss / Σ_global w (world 1 here).
    half = model.member_losses(mean[:, :2], None, y[:, :2], rows=3, weights=(w[:, :2], w.sum(1)))
    torch.testing.assert_close(half, torch.tensor([2.0 / 3, 5.0 / 3]))


def test_embedding_members_look_up_each_class() -> None:
    """``embedding=[C, E]``: member m maps a sequence to the concatenation of its table's rows."""
    model = Surrogate(3, members=2, hidden=(4,), embedding=[4, 5])
    table = model.net.embed.weight  # (2, 4, 5)
    x = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.0, 0.0]])
    out = model.net.embed(x.unsqueeze(0).expand(2, -1, -1))
    assert out.shape == (2, 2, 15)
    for m in range(2):
        torch.testing.assert_close(out[m, 0], torch.cat([table[m, 0], table[m, 3], table[m, 1]]))
    mean, _ = model(x)
    assert mean.shape == (2, 2)
    with pytest.raises(ValueError, match="class ids"):
        model(torch.tensor([[0.0, 4.0, 1.0]]))
