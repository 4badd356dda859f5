"""CbAS's equations and its VAE on hand examples (Brookes et al., ICML 2019; design-baselines' release)."""

import math

import pytest
import torch
from torch import nn

from lightning_mbo.functional.cbas import (
    gaussian_kl,
    importance_weights,
    mixture_exceedance,
    percentile_nearest,
    weighted_elbo_loss,
)
from lightning_mbo.generative.vae import DesignVAE


def test_gaussian_kl_hand_values_and_torch():
    assert gaussian_kl(torch.zeros(1, 3), torch.ones(1, 3)).item() == 0.0
    assert gaussian_kl(torch.ones(1, 2), torch.ones(1, 2)).item() == pytest.approx(1.0)  # 0.5 per dim
    # scale 2, loc 0: 0.5 (4 - 1) - log 2
    assert gaussian_kl(torch.zeros(1, 1), torch.full((1, 1), 2.0)).item() == pytest.approx(1.5 - math.log(2))
    loc, scale = torch.randn(4, 5), torch.rand(4, 5) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale),
                                            torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(loc, scale), ref, atol=1e-6)


def test_weighted_elbo_loss_hand_value():
    log_px, kl, w = torch.tensor([-2.0, -4.0]), torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.0])
    assert weighted_elbo_loss(log_px, kl, w, beta=2.0).item() == pytest.approx((1.0 * (2 + 2 * 1.0) + 0.0) / 2)


def test_mixture_exceedance_and_importance_weights():
    # one standard normal: P(y > 0) = 0.5, P(y > 1.6449) = 0.05
    one = (torch.zeros(1, 2), torch.ones(1, 2))
    assert torch.allclose(mixture_exceedance(*one, 0.0), torch.tensor([0.5, 0.5]))
    assert mixture_exceedance(*one, 1.6448536)[0].item() == pytest.approx(0.05, abs=1e-6)
    # equal mixture of N(0, 1) and N(2, 1) at gamma 1: 1 - (Phi(1) + Phi(-1)) / 2 = 0.5
    means, stds = torch.tensor([[0.0], [2.0]]), torch.ones(2, 1)
    assert mixture_exceedance(means, stds, 1.0).item() == pytest.approx(0.5)
    w = importance_weights(torch.tensor([math.log(2.0)]), torch.tensor([0.0]), means, stds, 1.0)
    assert w.item() == pytest.approx(1.0)  # p/q = 2 times 0.5


def test_percentile_is_the_nearest_rank():
    assert percentile_nearest(torch.arange(10.0), 80.0).item() == 7.0  # rank 0.8 * 9 = 7.2 -> 7
    assert percentile_nearest(torch.arange(10.0).flip(0), 100.0).item() == 9.0


def _zero(module: nn.Module) -> None:
    for p in module.parameters():
        nn.init.zeros_(p)


def test_discrete_vae_elbo_on_a_hand_example():
    vae = DesignVAE((3,), num_classes=4, latent_size=2, hidden=5, embedding=3)
    _zero(vae.decoder)  # uniform categoricals: log p(x|z) = -3 log 4 for any x, z
    _zero(vae.encoder)  # loc 0 and raw log-std 0 for any x
    x = torch.tensor([[0, 1, 3], [2, 2, 2]])
    z = torch.randn(2, 2)
    assert torch.allclose(vae.log_likelihood(x, z), torch.full((2,), -3 * math.log(4)))
    loc, scale = vae.encode(x)
    lo, hi = math.log(0.1), math.log(0.2)
    s = hi - math.log1p(math.exp(hi - 0.0))
    s = lo + math.log1p(math.exp(s - lo))
    expected_scale = math.log1p(math.exp(s))  # softplus of the bounded log-std, as released
    assert torch.equal(loc, torch.zeros(2, 2)) and torch.allclose(scale, torch.full((2, 2), expected_scale))
    kl = gaussian_kl(loc, scale)
    assert torch.allclose(kl, torch.full((2,), 2 * (0.5 * (expected_scale**2 - 1) - math.log(expected_scale))))


def test_decoder_log_likelihood_is_the_categorical_and_samples_follow_it():
    torch.manual_seed(0)
    vae = DesignVAE((4,), num_classes=3, latent_size=2, hidden=6, embedding=2)
    z = torch.randn(5, 2)
    x = torch.randint(0, 3, (5, 4))
    ref = torch.distributions.Categorical(logits=vae.decode(z)).log_prob(x).sum(-1)
    assert torch.allclose(vae.log_likelihood(x, z), ref)
    draws = vae.sample(z.repeat(4000, 1), torch.Generator().manual_seed(1))
    freq = torch.nn.functional.one_hot(draws[0::5], 3).float().mean(0)  # row 0's z
    assert torch.allclose(freq, vae.decode(z[:1])[0].exp(), atol=0.03)


def test_continuous_vae_decoder_is_a_gaussian():
    torch.manual_seed(0)
    vae = DesignVAE((3,), num_classes=None, latent_size=2, hidden=4)
    z, x = torch.randn(6, 2), torch.randn(6, 3)
    loc, scale = vae.decode(z)
    assert torch.allclose(vae.log_likelihood(x, z), torch.distributions.Normal(loc, scale).log_prob(x).sum(-1))
    assert vae.sample(z).shape == (6, 3)
