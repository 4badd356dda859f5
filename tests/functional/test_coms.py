"""COMs' equations on hand examples (Trabucco et al., ICML 2021, Eqs. 4-5)."""

import torch

from lightning_mbo.functional.coms import conservative_losses, overestimation, particle_ascent


def test_particle_ascent_on_a_linear_model_moves_t_eta_w():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = particle_ascent(lambda z: z @ w, x, lr=0.1, steps=5)
    assert torch.allclose(out, x + 5 * 0.1 * w.detach(), atol=1e-6)
    assert w.grad is None and not out.requires_grad  # stop-gradient: nothing reaches the model


def test_particle_ascent_on_a_quadratic_contracts_by_one_minus_eta_per_step():
    # f(x) = -||x||^2 / 2: grad = -x, so x_t = (1 - eta)^t x_0, each row on its own
    x = torch.tensor([[2.0, -4.0], [1.0, 0.0]])
    out = particle_ascent(lambda z: -0.5 * (z**2).sum(-1), x, lr=0.25, steps=3)
    assert torch.allclose(out, 0.75**3 * x)


def test_particle_ascent_stacked_networks_climb_their_own_model():
    # (M, b, D) batches: network m's rows follow network m's gradient only
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.zeros(2, 3, 2)
    out = particle_ascent(lambda z: (z * w[:, None, :]).sum(-1), x, lr=1.0, steps=2)
    assert torch.equal(out[0], torch.tensor([[2.0, 0.0]] * 3)) and torch.equal(out[1], torch.tensor([[0.0, 2.0]] * 3))


def test_conservative_losses_on_a_hand_batch():
    y = torch.tensor([[1.0, 0.0]])
    pred = torch.tensor([[0.5, 1.0]])
    pred_neg = torch.tensor([[2.5, 0.0]])
    alpha = torch.tensor([0.1], requires_grad=True)
    assert torch.allclose(overestimation(pred, pred_neg), torch.tensor([[2.0, -1.0]]))
    # (1 - 0.5)^2 + 0.1 * 2 = 0.45 ; (0 - 1)^2 + 0.1 * -1 = 0.9
    loss = conservative_losses(y, pred, pred_neg, alpha)
    assert torch.allclose(loss, torch.tensor([[0.45, 0.9]]))
    assert not loss.requires_grad  # alpha enters as a constant: its own step is the dual one
