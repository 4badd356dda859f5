"""Released surrogate settings, observed on the built objects: the Gaussian head's soft bounds
on the log-std, COMs' optimizers, and per-member best-epoch selection."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_mbo.methods.best_epoch import BestMemberWeights
from lightning_mbo.methods.coms import COMs
from lightning_mbo.methods.surrogate import Surrogate


class Fixed(nn.Module):
    """A stand-in network that returns a hand-written ``(M, B, 2)`` output."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


def test_gaussian_head_soft_bounds_start_at_log_0_1_and_log_0_2() -> None:
    """design-baselines (``design_baselines/utils.py`` ``Ensemble``/``ForwardModel``: ``max_logstd``
    = log 0.2, ``min_logstd`` = log 0.1, trainable): ``s ← max − softplus(max − s)``, then
    ``s ← min + softplus(s − min)``."""
    model = Surrogate(3, members=2, hidden=(4,))
    assert torch.allclose(model.max_logstd, torch.full((2, 1), math.log(0.2)))
    assert torch.allclose(model.min_logstd, torch.full((2, 1), math.log(0.1)))
    assert model.max_logstd.requires_grad and model.min_logstd.requires_grad
    raw = torch.tensor([-50.0, -3.0, math.log(0.15), 0.0, 50.0])
    out = torch.stack([torch.stack([torch.full_like(raw, 7.0), raw], -1)] * 2)  # (2, 5, 2)
    model.net = Fixed(out)
    mean, logstd = model(torch.zeros(5, 3))
    hi, lo = math.log(0.2), math.log(0.1)
    expect = lo + F.softplus(hi - F.softplus(hi - raw) - lo)
    assert torch.allclose(mean, torch.full((2, 5), 7.0))
    assert torch.allclose(logstd[0], expect, atol=1e-6) and torch.allclose(logstd[1], expect, atol=1e-6)
    logstd = logstd.detach()
    # Far below: log 0.1 from above; far above: the upper bound is applied first, so the limit is
    # lo + softplus(hi - lo) = log 0.1 + log 3 = log 0.3 (as released).
    assert float(logstd[0, 0]) == pytest.approx(lo, abs=1e-5) and float(logstd[0, 0]) >= lo - 1e-6
    assert float(logstd[0, -1]) == pytest.approx(math.log(0.3), abs=1e-5)
    assert torch.all(logstd[0, 1:] > logstd[0, :-1])
    # Not a hard clamp: a value inside is moved (softplus), not kept.
    assert abs(float(logstd[0, 2]) - math.log(0.15)) > 1e-3


def test_mse_head_has_no_bounds() -> None:
    model = Surrogate(3, hidden=(4,), head="mse")
    assert not hasattr(model, "max_logstd")
    assert model(torch.zeros(2, 3))[1] is None


def test_coms_optimizers_use_keras_epsilon() -> None:
    """COMs' released TF2 code uses Keras' Adam (epsilon 1e-7; torch's default is 1e-8), for the
    model (lr 3e-4) and for log α (lr 0.01)."""
    opts = COMs(3, hidden=(4,)).configure_optimizers()
    assert len(opts) == 2
    model_opt, alpha_opt = opts
    assert all(g["eps"] == 1e-7 for g in model_opt.param_groups)
    assert all(g["eps"] == 1e-7 for g in alpha_opt.param_groups)
    assert model_opt.param_groups[0]["lr"] == 3e-4 and alpha_opt.param_groups[0]["lr"] == 0.01


def test_coms_released_defaults() -> None:
    """The released COMs (Trabucco et al., ICML 2021; design-baselines ``coms_cleaned``)."""
    h = COMs(3, hidden=(4,)).hparams
    assert (h.alpha_init, h.alpha_lr, h.overestimation_limit, h.particle_lr, h.particle_steps) \
        == (0.1, 0.01, 2.0, 2.0, 50)
    assert COMs.SEARCH_STEPS == 50  # coms_cleaned/__init__.py:347-390: 50 steps, scored at step 50
    assert math.exp(float(COMs(3, hidden=(4,)).log_alpha[0])) == pytest.approx(0.1)


def test_surrogate_default_adam_epsilon_is_torchs() -> None:
    opt = Surrogate(3, hidden=(4,)).configure_optimizers()
    opt = opt[0][0] if isinstance(opt, (list, tuple)) and isinstance(opt[0], list) else opt
    opt = opt[0] if isinstance(opt, (list, tuple)) else opt
    assert opt.param_groups[0]["eps"] == 1e-8 and opt.param_groups[0]["lr"] == 3e-4


# --- best-epoch selection ------------------------------------------------------------------


def _params(value: float, members: int = 3) -> dict[str, torch.Tensor]:
    return {"w": torch.full((members, 2), value)}


def test_best_epoch_keeps_each_members_best_and_nan_counts_as_minus_one() -> None:
    best = BestMemberWeights(3)
    best.update(torch.tensor([0.2, float("nan"), -0.5]), _params(1.0))
    # NaN counts as -1: it beats nothing kept before, but it is kept over -inf.
    assert torch.equal(best.score, torch.tensor([0.2, -1.0, -0.5]))
    best.update(torch.tensor([float("nan"), -0.9, -0.5]), _params(2.0))
    assert torch.equal(best.score, torch.tensor([0.2, -0.9, -0.5]))
    # Member 0: NaN (-1) does not beat 0.2; member 1: -0.9 beats NaN's -1; member 2: a tie keeps the first.
    assert torch.equal(best.weights["w"][:, 0], torch.tensor([1.0, 2.0, 1.0]))
    best.update(torch.tensor([0.3, float("nan"), -0.4]), _params(3.0))
    assert torch.equal(best.weights["w"][:, 0], torch.tensor([3.0, 2.0, 3.0]))
    params = _params(9.0)
    best.restore(params)
    assert torch.equal(params["w"][:, 0], torch.tensor([3.0, 2.0, 3.0]))


def test_best_epoch_a_tie_keeps_the_earlier_epoch() -> None:
    best = BestMemberWeights(2)
    best.update(torch.tensor([0.5, 0.5]), _params(1.0, 2))
    best.update(torch.tensor([0.5, 0.6]), _params(2.0, 2))
    assert torch.equal(best.weights["w"][:, 0], torch.tensor([1.0, 2.0]))


def test_best_epoch_an_all_nan_member_keeps_its_first_epoch() -> None:
    """A member whose validation Pearson is NaN at every epoch (constant predictions) keeps its
    first epoch's weights, not its last; the others are unaffected."""
    best = BestMemberWeights(2)
    for epoch, second in enumerate([0.1, 0.4, 0.2]):
        best.update(torch.tensor([float("nan"), second]), _params(float(epoch), 2))
    assert torch.equal(best.weights["w"][:, 0], torch.tensor([0.0, 1.0]))
    assert torch.equal(best.score, torch.tensor([-1.0, 0.4]))


def test_best_epoch_any_real_pearson_beats_nan() -> None:
    best = BestMemberWeights(1)
    best.update(torch.tensor([float("nan")]), _params(0.0, 1))
    best.update(torch.tensor([-0.99]), _params(1.0, 1))
    assert float(best.weights["w"][0, 0]) == 1.0


def test_best_epoch_restore_before_any_update_changes_nothing() -> None:
    params = _params(4.0)
    BestMemberWeights(3).restore(params)
    assert torch.equal(params["w"], torch.full((3, 2), 4.0))
