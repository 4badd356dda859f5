"""The multiplier step shared by IGNITE (λ) and COMs (log α), on hand values."""

import math

import torch

from lightning_mbo.functional.dual import dual_objective, dual_update


def test_dual_update_moves_lambda_with_the_violation():
    lmbda = torch.tensor([0.5, 0.5, 0.0, 0.02])
    violation = torch.tensor([1.0, -1.0, -1.0, -1.0])
    new = dual_update(lmbda, violation, lr=0.1)
    assert torch.allclose(new, torch.tensor([0.6, 0.4, -0.1, -0.08]))  # unclamped (released code)
    clamped = dual_update(lmbda, violation, lr=0.1, clamp=True)
    assert torch.allclose(clamped, torch.tensor([0.6, 0.4, 0.0, 0.0]))
    assert torch.equal(lmbda, torch.tensor([0.5, 0.5, 0.0, 0.02]))  # input not modified


def test_dual_update_is_a_plain_step_on_the_dual_objective():
    lmbda = torch.tensor([0.3, -0.2], requires_grad=True)
    violation = torch.tensor([0.7, -0.4])
    dual_objective(lmbda, violation).sum().backward()
    assert torch.allclose(lmbda.grad, -violation)
    assert torch.allclose(lmbda.detach() - 0.01 * lmbda.grad, dual_update(lmbda, violation, lr=0.01))


def test_log_multiplier_gradient_is_minus_alpha_times_the_violation():
    # COMs: alpha = exp(log alpha); the released alpha_loss = alpha * tau - alpha * gap.
    log_alpha = torch.tensor([math.log(0.1), math.log(2.0)], requires_grad=True)
    gap, tau = torch.tensor([3.0, 0.5]), 2.0
    dual_objective(log_alpha.exp(), gap - tau).sum().backward()
    assert torch.allclose(log_alpha.grad, torch.tensor([-0.1 * 1.0, -2.0 * -1.5]))
    # a descent step raises alpha where the gap exceeds tau and lowers it where there is slack
    stepped = (log_alpha - 0.01 * log_alpha.grad).exp()
    assert stepped[0] > 0.1 and stepped[1] < 2.0


def test_the_violation_carries_no_gradient():
    w = torch.tensor(2.0, requires_grad=True)
    m = torch.tensor([1.5], requires_grad=True)
    dual_objective(m, (w * 3).reshape(1)).sum().backward()
    assert w.grad is None and torch.allclose(m.grad, torch.tensor([-6.0]))
