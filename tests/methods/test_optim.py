"""The surrogates' fused Adam (lightning_mbo.methods.optim.adam) against torch's default Adam.

The fused kernel evaluates Kingma and Ba's update (ICLR 2015, Algorithm 1, torch's form) in
one pass per tensor with the float32 operations in another order: the first moment is bit for
bit the default's, the second moment and the parameters differ by float32 rounding only (a
couple of units in the last place of ``max(|p|, lr)`` per step, accumulating linearly over a
few steps with the same gradients).
"""

from __future__ import annotations

import pytest
import torch

from lightning_mbo.methods import COMs, RoMA, Surrogate
from lightning_mbo.methods.optim import adam
from lightning_mbo.nn import StackedMLP

EPS32 = torch.finfo(torch.float32).eps


def _gradients(steps: int) -> list[list[torch.Tensor]]:
    """Real gradients of a stacked member's loss (at its initial weights, one batch per step and
    rescaled per step), the same for both runs: the runs' weights differ by rounding, their
    gradients must not make the difference."""
    torch.manual_seed(0)
    net = StackedMLP(3, 6, hidden=(64, 64), out_features=2, activation="leaky_relu", init="glorot")
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(steps):
        x, y = torch.randn(32, 6, generator=g), torch.randn(3, 32, 2, generator=g)
        loss = ((net(x) - y) ** 2).mean() * 10.0 ** (-(i % 3))
        out.append(list(torch.autograd.grad(loss, list(net.parameters()))))
    return out


def _run(steps: int, fused: bool, lr: float = 3e-4, weight_decay: float = 0.0):
    torch.manual_seed(0)
    net = StackedMLP(3, 6, hidden=(64, 64), out_features=2, activation="leaky_relu", init="glorot")
    params = list(net.parameters())
    opt = adam(params, lr=lr, eps=1e-7, weight_decay=weight_decay) if fused else \
        torch.optim.Adam(params, lr=lr, eps=1e-7, weight_decay=weight_decay)
    for grads in _gradients(steps):
        for p, gr in zip(params, grads, strict=True):
            p.grad = gr.clone()
        opt.step()
    return params, opt


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_adam_matches_default_adam_to_float32_rounding(weight_decay: float) -> None:
    steps, lr = 5, 3e-4
    default, opt_d = _run(1, fused=False, lr=lr, weight_decay=weight_decay)
    fused, opt_f = _run(1, fused=True, lr=lr, weight_decay=weight_decay)
    assert opt_f.defaults["fused"] and not opt_d.defaults["fused"]
    for p, q in zip(default, fused, strict=True):  # one step from the same point
        assert ((p - q).abs() <= 2 * EPS32 * p.abs().clamp(min=lr)).all()
        torch.testing.assert_close(opt_d.state[p]["exp_avg"], opt_f.state[q]["exp_avg"], rtol=0, atol=0)
    default, opt_d = _run(steps, fused=False, lr=lr, weight_decay=weight_decay)
    fused, opt_f = _run(steps, fused=True, lr=lr, weight_decay=weight_decay)
    worst = 0.0
    for p, q in zip(default, fused, strict=True):
        diff = ((p - q).abs() / (EPS32 * p.abs().clamp(min=lr))).max().item()
        assert diff <= 2.5 * steps, diff
        worst = max(worst, diff)
        v_d, v_f = opt_d.state[p]["exp_avg_sq"], opt_f.state[q]["exp_avg_sq"]
        assert ((v_d - v_f).abs() <= steps * EPS32 * v_d.abs()).all()
    assert worst > 0  # not the same code path: the kernels really differ


def test_methods_build_the_fused_adam() -> None:
    for model in (Surrogate(4, hidden=(8,)), COMs(4, hidden=(8,)), RoMA(4, hidden=(8,))):
        opts = model.configure_optimizers()
        opt = opts[0] if isinstance(opts, list) else opts
        assert isinstance(opt, torch.optim.Adam) and opt.defaults["fused"], type(model).__name__
