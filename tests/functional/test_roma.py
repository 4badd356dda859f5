"""RoMA's equations (lightning_mbo.functional.roma; Yu et al., NeurIPS 2021, released
``design_baselines/safeweight/trainers.py``): hand examples and an independent ``torch.func`` reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, vmap

from lightning_mbo.functional.roma import (
    adaptation_objective,
    clip_slices,
    gaussian_nll,
    input_gradient_norms,
    normalised_step,
    slice_norms,
    trust_region_score,
)
from lightning_mbo.nn import activation_fn, activation_grad_fn

F64 = torch.float64


def test_slice_norms_are_per_network() -> None:
    w = torch.tensor([[[3.0, 4.0]], [[0.0, 2.0]]])  # (M=2, 1, 2)
    (n,) = slice_norms([w])
    assert n.shape == (2, 1, 1)
    assert n.flatten().tolist() == [5.0, 2.0]


def test_normalised_step_hand_example() -> None:
    """``w ← w − step·‖w_a‖/(‖g‖ + eps)·g`` per network and per tensor."""
    w = torch.tensor([[[3.0, 4.0]], [[0.0, 1.0]]], dtype=F64)  # (2, 1, 2): norms 5 and 1
    b = torch.tensor([[1.0], [2.0]], dtype=F64)  # a second tensor (2, 1): its own norms 1 and 2
    g_w = torch.tensor([[[0.0, 2.0]], [[3.0, 0.0]]], dtype=F64)  # norms 2 and 3
    g_b = torch.tensor([[-4.0], [0.5]], dtype=F64)
    new_w, new_b = normalised_step([w, b], slice_norms([w, b]), [g_w, g_b], step=0.1)
    # network 0: 3, 4 - 0.1 * 5/2 * 2 = 3.5; network 1: 0 - 0.1 * 1/3 * 3 = -0.1, 1
    torch.testing.assert_close(new_w, torch.tensor([[[3.0, 3.5]], [[-0.1, 1.0]]], dtype=F64))
    # b: 1 - 0.1 * 1/4 * (-4) = 1.1; 2 - 0.1 * 2/0.5 * 0.5 = 1.8
    torch.testing.assert_close(new_b, torch.tensor([[1.1], [1.8]], dtype=F64))
    # Each step moves a slice by exactly step * ‖w_a‖ (eps 0), whatever the gradient's scale.
    moved = slice_norms([new_w - w])[0].flatten()
    torch.testing.assert_close(moved, torch.tensor([0.5, 0.1], dtype=F64))
    # The anchor is not the tensor stepped: adaptation scales by the model's norms.
    (anchored,) = normalised_step([w], [torch.full((2, 1, 1), 10.0, dtype=F64)], [g_w], step=0.1)
    torch.testing.assert_close(anchored[0], torch.tensor([[3.0, 3.0]], dtype=F64))


def test_normalised_step_eps() -> None:
    w, g = torch.ones(1, 2, 2), torch.zeros(1, 2, 2)
    (same,) = normalised_step([w], slice_norms([w]), [g], step=0.1, eps=1e-6)
    assert torch.equal(same, w)  # adaptation's 1e-6: a zero gradient does not move
    (nan,) = normalised_step([w], slice_norms([w]), [g], step=0.1)
    assert nan.isnan().all()  # pre-training as released (no eps)
    g = torch.tensor([[[1e-6, 0.0], [0.0, 0.0]]])
    (small,) = normalised_step([w], slice_norms([w]), [g], step=0.1, eps=1e-6)
    torch.testing.assert_close(small[0, 0, 0], torch.tensor(1 - 0.1 * 2.0 * 0.5))  # ‖g‖/(‖g‖ + eps) = 1/2


def test_clip_slices_is_tf_clip_by_norm_per_network() -> None:
    g = torch.tensor([[[3.0, 4.0]], [[0.3, 0.4]], [[0.0, 0.0]]])  # norms 5, 0.5, 0
    (clipped,) = clip_slices([g], 1.0)
    torch.testing.assert_close(clipped, torch.tensor([[[0.6, 0.8]], [[0.3, 0.4]], [[0.0, 0.0]]]))
    (clipped,) = clip_slices([g], 2.0)
    torch.testing.assert_close(clipped[0], torch.tensor([[1.2, 1.6]]))
    # Per tensor too: a second tensor is clipped by its own norm.
    a, b = clip_slices([torch.tensor([[2.0]]), torch.tensor([[0.5]])], 1.0)
    assert (float(a), float(b)) == (1.0, 0.5)


def test_gaussian_nll_is_the_normal_log_density() -> None:
    mean, logstd, y = torch.tensor([0.3, -1.0]), torch.tensor([-2.0, 0.5]), torch.tensor([1.0, -0.2])
    expected = -torch.distributions.Normal(mean, logstd.exp()).log_prob(y)
    torch.testing.assert_close(gaussian_nll(mean, logstd, y), expected)
    assert float(gaussian_nll(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0))) == pytest.approx(
        0.5 * math.log(2 * math.pi))


def test_trust_region_score_hand_values() -> None:
    """``μ − (μ − μ₀)²/(2·region)``: 2 − 1/8 at μ = 2, μ₀ = 1, region 4; flat at μ = μ₀ + region."""
    mu0 = torch.tensor([1.0, 1.0, 1.0])
    mu = torch.tensor([2.0, 1.0, 5.0], requires_grad=True)
    score = trust_region_score(mu, mu0, region=4.0)
    torch.testing.assert_close(score.detach(), torch.tensor([1.875, 1.0, 3.0]))
    (g,) = torch.autograd.grad(score.sum(), mu)
    torch.testing.assert_close(g, torch.tensor([0.75, 1.0, 0.0]))  # 1 - (μ - μ₀)/region


def test_adaptation_objective_of_linear_networks_in_closed_form() -> None:
    """``μ_r(x) = a_r·x + b_r``, log-std ``s_r``: ``‖∇_x μ_r‖ = ‖a_r‖`` (its weight gradient
    ``a_r/‖a_r‖`` only exists through the double backward), plus α times the label NLL."""
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=F64, requires_grad=True)  # (R=2, D=2)
    b = torch.tensor([0.5, -1.0], dtype=F64)
    s = torch.tensor([0.0, -1.0], dtype=F64)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=F64, requires_grad=True)  # (C=3, D)
    y = torch.tensor([1.0, 2.0, 0.0], dtype=F64)
    membership = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)  # designs 0, 1 -> net 0; 2 -> net 1
    mean = a @ x.T + b[:, None]  # (R, C)
    logstd = s[:, None].expand(2, 3)
    norms = input_gradient_norms(mean, x, membership)
    torch.testing.assert_close(norms.detach(), torch.tensor([5.0, 5.0, 1.0], dtype=F64))
    alpha = 0.5
    obj = adaptation_objective(mean, logstd, x, y, membership, alpha)

    def nll(m: float, sd: float, t: float) -> float:
        return 0.5 * ((t - m) / math.exp(sd)) ** 2 + sd + 0.5 * math.log(2 * math.pi)

    net0 = 5.0 + alpha * (nll(3.5, 0.0, 1.0) + nll(4.5, 0.0, 2.0)) / 2
    net1 = 1.0 + alpha * nll(1.0, -1.0, 0.0)  # μ_1(x_2) = 2 - 1
    torch.testing.assert_close(obj.detach(), torch.tensor([net0, net1], dtype=F64))
    (g,) = torch.autograd.grad(obj.sum(), a)
    # d/da_0: a_0/‖a_0‖ + α mean_c (μ - y)/σ² x_c over its designs 0 and 1
    g0 = torch.tensor([0.6, 0.8], dtype=F64) + alpha * (2.5 * torch.tensor([1.0, 0.0]) + 2.5 * torch.tensor(
        [0.0, 1.0])).to(F64) / 2
    g1 = torch.tensor([1.0, 0.0], dtype=F64) + alpha * (1.0 / math.exp(-2.0)) * torch.tensor([2.0, 2.0], dtype=F64)
    torch.testing.assert_close(g, torch.stack([g0, g1]))


def test_a_network_without_designs_gets_zero() -> None:
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    x = torch.tensor([[1.0, 1.0]], requires_grad=True)
    mean = a @ x.T
    obj = adaptation_objective(mean, torch.zeros(2, 1), x, torch.zeros(1), torch.tensor([[1.0], [0.0]]))
    assert float(obj[1].detach()) == 0.0
    (g,) = torch.autograd.grad(obj.sum(), a)
    assert torch.equal(g[1], torch.zeros(2))


def test_adaptation_objective_against_a_torch_func_reference() -> None:
    """A softplus network (the released model's shape, small): the objective and its weight gradient
    against per-design input gradients and a functional weight gradient from ``torch.func``."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Softplus(), torch.nn.Linear(7, 7), torch.nn.Softplus(),
                              torch.nn.Linear(7, 2)).to(F64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.randn(6, 5, dtype=F64)
    y = torch.randn(6, dtype=F64)
    alpha = 0.7

    def reference(p: dict[str, torch.Tensor]) -> torch.Tensor:
        def mu(xi: torch.Tensor) -> torch.Tensor:
            return functional_call(net, p, (xi,))[0]

        norms = vmap(grad(mu))(x).norm(dim=1)
        out = functional_call(net, p, (x,))
        nll = 0.5 * ((y - out[:, 0]) / out[:, 1].exp()) ** 2 + out[:, 1] + 0.5 * math.log(2 * math.pi)
        return norms.mean() + alpha * nll.mean()

    expected, expected_grad = reference(params), grad(reference)(params)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    xg = x.clone().requires_grad_(True)
    out = functional_call(net, leaves, (xg,))
    obj = adaptation_objective(out[:, 0][None], out[:, 1][None], xg, y, torch.ones(1, 6, dtype=F64), alpha)
    torch.testing.assert_close(obj[0], expected, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(obj.sum(), list(leaves.values()))
    for (name, ref), g in zip(expected_grad.items(), got, strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12, msg=name)
    # The smoothness term does reach the weights (second order): without it the gradient differs.
    label_only = grad(lambda p: reference(p) - vmap(grad(lambda xi: functional_call(net, p, (xi,))[0]))(x)
                      .norm(dim=1).mean())(params)
    assert max(float((label_only[k] - expected_grad[k]).abs().max()) for k in params) > 1e-3


def test_softplus_activation_and_its_derivative() -> None:
    """RoMA's activation, Keras' ``log(1 + e^x)``, and the derivative the hand-written backward passes use."""
    z = torch.linspace(-30, 30, 61, dtype=F64, requires_grad=True)
    out = activation_fn("softplus")(z)
    torch.testing.assert_close(out[25:36].detach(), torch.log1p(torch.exp(z[25:36].detach())))
    (g,) = torch.autograd.grad(out.sum(), z)
    torch.testing.assert_close(activation_grad_fn("softplus")(z.detach()), g)
