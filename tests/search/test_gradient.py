"""Gradient ascent over designs (search.gradient): design-baselines' plain steps, Tri-mentoring's Adam."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_mbo.search.gradient import gradient_ascent

C = 0.5


def quadratic(x: Tensor) -> Tensor:
    """``-||x - 0.5||^2`` per row; gradient ``-2 (x - 0.5)``."""
    return -((x - C) ** 2).sum(-1)


def wavy(x: Tensor) -> Tensor:
    return torch.sin(3 * x).sum(-1) - 0.1 * (x**2).sum(-1) + x[:, 0] * x[:, 1]


def test_one_sgd_step_hand_values():
    x0 = torch.tensor([[1.0, 2.0], [0.5, -0.5]], dtype=torch.float64)
    out = gradient_ascent(x0, quadratic, steps=1, lr=0.1)
    # grad = -2 (x - 0.5) = [-1, -3] and [0, 2]: x + 0.1 grad.
    torch.testing.assert_close(out.x, torch.tensor([[0.9, 1.7], [0.5, -0.3]], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(out.trajectory, torch.tensor([[-2.5, -1.0], [-1.6, -0.64]], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_sgd_equals_x_plus_lr_grad_on_any_objective():
    x0 = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(wavy(x).sum(), x)
    out = gradient_ascent(x0, wavy, steps=1, lr=0.03, optimizer="sgd")
    torch.testing.assert_close(out.x, x0 + 0.03 * grad, rtol=0, atol=1e-14)


def test_sgd_closed_form_over_many_steps():
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lr, steps = 0.05, 40
    out = gradient_ascent(x0, quadratic, steps=steps, lr=lr)
    # x_T - c = (1 - 2 lr)^T (x_0 - c)
    torch.testing.assert_close(out.x, C + (1 - 2 * lr) ** steps * (x0 - C), rtol=1e-12, atol=1e-12)
    assert torch.all(out.trajectory[1:] >= out.trajectory[:-1])  # uphill every step


def test_adam_equals_torch_adam_on_minus_f():
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = gradient_ascent(x0, wavy, steps=7, lr=0.05, optimizer="adam")
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(7):
        opt.zero_grad()
        (-wavy(x)).sum().backward()
        opt.step()
    torch.testing.assert_close(out.x, x.detach(), rtol=0, atol=1e-12)
    # Adam is not SGD: the two rules end elsewhere.
    sgd = gradient_ascent(x0, wavy, steps=7, lr=0.05, optimizer="sgd")
    assert not torch.allclose(sgd.x, out.x)


def test_adam_first_step_moves_each_coordinate_by_lr():
    # Adam's first step is lr * sign(grad) (up to eps).
    x0 = torch.tensor([[1.0, 2.0, 0.5 + 1e-3]], dtype=torch.float64)
    out = gradient_ascent(x0, quadratic, steps=1, lr=0.1, optimizer="adam")
    torch.testing.assert_close(out.x - x0, torch.tensor([[-0.1, -0.1, -0.1]], dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_trajectory_shape_and_ends(optimizer, steps):
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    out = gradient_ascent(x0, wavy, steps=steps, lr=0.01, optimizer=optimizer)
    assert out.trajectory.shape == (steps + 1, 4)
    assert out.x.shape == (4, 3)
    torch.testing.assert_close(out.trajectory[0], wavy(x0))
    torch.testing.assert_close(out.trajectory[-1], wavy(out.x))
    assert not out.x.requires_grad and not out.trajectory.requires_grad
    if steps == 0:
        assert torch.equal(out.x, x0)


def test_before_step_sees_steps_in_order_and_current_designs():
    x0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    lr, seen = 0.1, []

    def hook(x: Tensor, t: int) -> None:
        assert not x.requires_grad
        seen.append((t, x.clone()))

    gradient_ascent(x0, quadratic, steps=4, lr=lr, before_step=hook)
    assert [t for t, _ in seen] == [0, 1, 2, 3]
    for t, x in seen:
        torch.testing.assert_close(x, C + (1 - 2 * lr) ** t * (x0 - C), rtol=0, atol=1e-14)


def test_hook_runs_before_the_gradient():
    # The hook may change the objective (Tri-mentoring mentors its proxies there): the step must use it.
    scale = {"a": 1.0}
    objective = lambda x: scale["a"] * quadratic(x)

    def hook(x: Tensor, t: int) -> None:
        scale["a"] = 2.0

    out = gradient_ascent(torch.tensor([[1.0]], dtype=torch.float64), objective, steps=1, lr=0.1, before_step=hook)
    torch.testing.assert_close(out.x, torch.tensor([[1.0 - 0.1 * 2 * 2 * 0.5]], dtype=torch.float64))


def test_inputs_untouched_and_candidates_independent():
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(4))
    copy = x0.clone()
    both = gradient_ascent(x0, wavy, steps=3, lr=0.1)
    assert torch.equal(x0, copy)
    alone = gradient_ascent(x0[1:2], wavy, steps=3, lr=0.1)
    torch.testing.assert_close(both.x[1:2], alone.x)


def test_runs_under_no_grad_and_inference_callers():
    x0 = torch.tensor([[1.0, 2.0]])
    with torch.no_grad():
        out = gradient_ascent(x0, quadratic, steps=1, lr=0.1)
    torch.testing.assert_close(out.x, torch.tensor([[0.9, 1.7]]))


def test_bad_arguments():
    x0 = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="'sgd' or 'adam'"):
        gradient_ascent(x0, quadratic, steps=1, lr=0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="steps must be >= 0"):
        gradient_ascent(x0, quadratic, steps=-1, lr=0.1)


def test_hook_statistics_are_collected_per_step():
    x0 = torch.zeros(3, 2)
    out = gradient_ascent(x0, quadratic, steps=3, lr=0.1, before_step=lambda x, t: {"t": t, "norm": x.norm()})
    assert out.stats["t"] == [0.0, 1.0, 2.0]
    assert out.stats["norm"][0] == 0.0 and out.stats["norm"][2] > out.stats["norm"][1] > 0
    assert gradient_ascent(x0, quadratic, steps=2, lr=0.1, before_step=lambda x, t: None).stats == {}
