"""MINs' equations (lightning_mbo.functional.mins): the reweighting on hand histograms and against
a numpy transcription of the released ``get_weights``, the gradient penalty against autograd, the
weighted WGAN losses on hand values, and the Gumbel-softmax relaxation's properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_mbo.functional.mins import (
    bin_index,
    critic_loss,
    generator_loss,
    gradient_penalty,
    gumbel_softmax,
    histogram_weights,
    randomized_labels,
    relax_one_hot,
    target_bin_mass,
    temperature,
)


def _released_weights(scores: np.ndarray, base_temp: float) -> np.ndarray:
    """design-baselines' ``get_weights`` (mins/utils.py:52-84), transcribed in numpy."""
    hist, edges = np.histogram(scores, bins=20)
    hist = hist / np.sum(hist)
    upper = edges[1:]
    soft = np.exp((upper - upper.max()) / base_temp)
    soft = soft / soft.sum()
    target = soft * (hist / (hist + 1e-3))
    target = target / (np.sum(target) + 1e-7)
    k = np.minimum(np.digitize(scores, edges[1:]), 19)
    return np.clip(target[k] / (hist[k] + 1e-7), 0.0, 5.0)


def test_weights_on_a_hand_histogram() -> None:
    """Two bins over y = (0, 0, 0, 1): edges (0, 0.5, 1), shares (3/4, 1/4); at τ = 0.5 the softmax
    over the upper edges (0.5, 1) is (1, e) / (1 + e)."""
    y = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    p, h, edges = target_bin_mass(y, bins=2, base_temp=0.5)
    torch.testing.assert_close(edges, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(h, torch.tensor([0.75, 0.25], dtype=torch.float64))
    soft = torch.tensor([1.0, math.e], dtype=torch.float64) / (1 + math.e)
    raw = soft * h / (h + 1e-3)
    torch.testing.assert_close(p, raw / (raw.sum() + 1e-7))
    w = histogram_weights(y, bins=2, base_temp=0.5)
    expect = torch.tensor([p[0] / (0.75 + 1e-7)] * 3 + [p[1] / (0.25 + 1e-7)], dtype=torch.float64)
    torch.testing.assert_close(w, expect)
    assert w[3] > 1 > w[0]  # the better, rarer bin is up-weighted


def test_weights_clip_and_the_closed_last_bin() -> None:
    """One top row among 99 at the bottom: its weight would be ~100, clipped to 5; the maximum
    falls in the last bin (closed), values on an inner edge in the bin above it."""
    y = torch.cat([torch.zeros(99), torch.ones(1)])
    w = histogram_weights(y)
    assert w[-1] == 5.0 and w[0] < 1e-3
    edges = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    k = bin_index(torch.tensor([0.0, 0.05, 0.049, 1.0], dtype=torch.float64), edges)
    assert k.tolist() == [0, 1, 0, 19]


@pytest.mark.parametrize("base_temp", [0.1, 1.0])
def test_weights_match_the_released_numpy(base_temp: float) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5000, generator=g, dtype=torch.float64) ** 3
    ours = histogram_weights(y, base_temp=base_temp).numpy()
    np.testing.assert_allclose(ours, _released_weights(y.numpy(), base_temp), rtol=1e-9, atol=1e-12)
    # A range of width 0: one bin of numpy's [y - 0.5, y + 0.5] holds everything.
    flat = torch.full((10,), 2.0, dtype=torch.float64)
    np.testing.assert_allclose(histogram_weights(flat).numpy(), _released_weights(flat.numpy(), 0.1), rtol=1e-9)


def test_gradient_penalty_of_a_linear_critic_by_hand() -> None:
    """D(x, y) = y · <a, x>: ∇_x D = y a everywhere, so the penalty is (1 − |y| ||a||)²."""
    a = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)  # ||a|| = 5 over a (2, 2) design

    def critic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * (x * a).flatten(1).sum(-1)

    x_real = torch.randn(3, 2, 2, dtype=torch.float64)
    x_fake = torch.randn(3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0.2, -0.1, 1.0], dtype=torch.float64)
    pen = gradient_penalty(critic, x_real, x_fake, y, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(pen, (1 - y.abs() * 5) ** 2)


def test_gradient_penalty_against_autograd_per_sample() -> None:
    """A nonlinear critic: the penalty at the interpolates equals a per-sample autograd reference,
    and its gradient with respect to the critic's weights (through the input gradient, as WGAN-GP
    trains it) matches central differences."""
    torch.manual_seed(0)
    w1 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, dtype=torch.float64)

    def critic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) @ w1) @ v * (1 + y)

    x_real, x_fake = torch.randn(4, 3, 2, dtype=torch.float64), torch.randn(4, 3, 2, dtype=torch.float64)
    y, e = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    pen = gradient_penalty(critic, x_real, x_fake, y, e)
    for i in range(4):
        xi = (e[i] * x_real[i] + (1 - e[i]) * x_fake[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(xi, y[i:i + 1]).sum(), xi)
        assert pen[i].item() == pytest.approx((1 - g.norm().item()) ** 2, rel=1e-10)
    (dw,) = torch.autograd.grad(pen.sum(), w1)
    h = 1e-6
    for idx in [(0, 0), (3, 2), (5, 4)]:
        with torch.no_grad():
            w1[idx] += h
            up = gradient_penalty(critic, x_real, x_fake, y, e).sum()
            w1[idx] -= 2 * h
            down = gradient_penalty(critic, x_real, x_fake, y, e).sum()
            w1[idx] += h
        assert dw[idx].item() == pytest.approx(((up - down) / (2 * h)).item(), rel=1e-5, abs=1e-8)


def test_weighted_wgan_losses_on_hand_values() -> None:
    d_real = torch.tensor([1.0, 2.0])
    d_fake = torch.tensor([0.5, -1.0])
    pen = torch.tensor([0.1, 0.2])
    w = torch.tensor([1.0, 2.0])
    # mean(w (−D(real) + D(fake) + 10 · penalty)) = mean(1 · 0.5, 2 · (−1)) = −0.75
    assert critic_loss(d_real, d_fake, pen, w, 10.0).item() == pytest.approx(-0.75)
    assert critic_loss(d_real, d_fake, pen, w, 0.0).item() == pytest.approx(-3.25)
    # mean(w · −D(fake)) = mean(−0.5, 2)
    assert generator_loss(d_fake, w).item() == pytest.approx(0.75)


def test_gumbel_softmax_is_on_the_simplex_and_tends_to_gumbel_max() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5]).expand(20000, 4)
    for temp in (0.001, 1.0, 5.0):
        s = gumbel_softmax(logits, temp, g)
        assert torch.all(s >= 0) and torch.allclose(s.sum(-1), torch.ones(len(s)))
    cold = gumbel_softmax(logits, 0.001, g)
    assert (cold.max(-1).values > 0.99).float().mean() > 0.99  # one-hot
    freq = torch.bincount(cold.argmax(-1), minlength=4).float() / len(cold)
    torch.testing.assert_close(freq, torch.softmax(logits[0], -1), atol=0.01, rtol=0)  # draws of softmax(logits)
    hot = gumbel_softmax(logits, 1000.0, g)
    assert (hot - 0.25).abs().max() < 0.02  # near uniform
    # log_softmax inside: shifting the logits changes nothing (same noise).
    a = gumbel_softmax(logits[:5], 1.0, torch.Generator().manual_seed(1))
    b = gumbel_softmax(logits[:5] + 7.0, 1.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_real_designs_reach_the_critic_relaxed() -> None:
    """``keep · onehot + (1 − keep)/C``, relaxed: at a low temperature a draw keeps its class with
    probability keep + (1 − keep)/C; at the first epoch's temperature 5 it is far from one-hot."""
    g = torch.Generator().manual_seed(0)
    onehot = torch.nn.functional.one_hot(torch.full((40000,), 2), 4).float()
    cold = relax_one_hot(onehot, 0.7, 0.001, g)
    assert (cold.argmax(-1) == 2).float().mean().item() == pytest.approx(0.7 + 0.3 / 4, abs=0.01)
    warm = relax_one_hot(onehot, 0.99, 5.0, g)
    assert torch.allclose(warm.sum(-1), torch.ones(len(warm)))
    assert warm.max(-1).values.mean() < 0.7
    assert (relax_one_hot(onehot[:100], 1.0, 0.001, g).argmax(-1) == 2).all()


def test_temperature_schedule() -> None:
    assert temperature(0, 200) == 5.0 and temperature(199, 200) == pytest.approx(1.0)
    assert temperature(1, 3, 5.0, 1.0) == pytest.approx(3.0)
    assert temperature(0, 1, 5.0, 1.0) == 1.0


def test_randomized_labels_sit_above_a_bins_lower_edge() -> None:
    """The labels are a sampled bin's lower edge plus Exponential(rate) noise (mean 1 / rate);
    at τ = 0.001 all but e^-50 of the target mass is on the top bin (lower edge 0.95 for y in [0, 1])."""
    y = torch.linspace(0.0, 1.0, 201)
    labels = randomized_labels(y, 20000, rate=10.0, base_temp=0.001, generator=torch.Generator().manual_seed(0))
    assert labels.shape == (20000,) and labels.dtype == y.dtype
    assert labels.min() >= 0.95 - 1e-6
    assert (labels - 0.95).mean().item() == pytest.approx(0.1, rel=0.05)
    assert randomized_labels(y, 0, rate=10.0).shape == (0,)
