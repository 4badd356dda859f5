"""CbAS's equations (pure torch): the weighted ELBO and the importance weights.

Brookes, Park, Listgarten, "Conditioning by adaptive sampling for robust design", ICML 2019,
as design-baselines releases it (``design_baselines/cbas/trainers.py``: ``WeightedVAE`` and
``CBAS.generate_data``). With a prior VAE ``p`` fitted to the data and a search VAE ``q``
(initially a copy of ``p``), every iteration draws ``x ~ q(x|z)``, ``z ~ N(0, I)``, and weights
each sample by (Eq. 7 of the paper, in the released form)

    w = p(x|z) / q(x|z) · P(y > γ | x),     γ = the ``percentile``-th percentile of the ensemble means,

where the likelihoods are the two DECODERS' at the same ``z`` (not the marginals ``p(x)/q(x)``)
and ``P(y > γ | x) = 1 − (1/K) Σ_k Φ((γ − μ_k(x)) / σ_k(x))`` is the exceedance of the
ensemble's equal-weight Gaussian mixture. ``q`` is then refitted by the weighted ELBO

    L = mean_n w_n (−log q(x_n|z_n) + β KL(q(z|x_n) || N(0, I))),   z_n ~ q(z|x_n) (one sample).

γ is recomputed each iteration and not kept monotone, as released.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_kl", "importance_weights", "mixture_exceedance", "percentile_nearest", "weighted_elbo_loss"]


def gaussian_kl(loc: Tensor, scale: Tensor) -> Tensor:
    """``KL(N(loc, diag scale²) || N(0, I))`` ``(n,)`` for ``loc``, ``scale`` ``(n, d)``:
    ``Σ_j ½(scale² + loc² − 1) − log scale``."""
    return (0.5 * (scale**2 + loc**2 - 1.0) - scale.log()).sum(-1)


def weighted_elbo_loss(log_px: Tensor, kl: Tensor, weights: Tensor, beta: float = 1.0) -> Tensor:
    """``mean_n w_n (−log p(x_n|z_n) + β KL_n)`` (a scalar) from ``(n,)`` terms."""
    return (weights * (-log_px + beta * kl)).mean()


def mixture_exceedance(means: Tensor, stds: Tensor, gamma: float | Tensor) -> Tensor:
    """``P(y > γ)`` ``(n,)`` under the equal-weight mixture of ``K`` Gaussians ``(K, n)`` each."""
    normal = torch.distributions.Normal(means, stds)
    return 1.0 - normal.cdf(torch.as_tensor(gamma, dtype=means.dtype, device=means.device)).mean(0)


def importance_weights(log_p: Tensor, log_q: Tensor, means: Tensor, stds: Tensor, gamma: float | Tensor) -> Tensor:
    """``exp(log p(x|z) − log q(x|z)) · P(y > γ | x)`` ``(n,)``.

    Args:
        log_p: ``(n,)`` the prior decoder's log-likelihood of each sample at its ``z``.
        log_q: ``(n,)`` the search decoder's, at the same ``z``.
        means: ``(K, n)`` the ensemble members' predicted means.
        stds: ``(K, n)`` their standard deviations.
        gamma: the threshold γ.
    """
    return (log_p - log_q).exp() * mixture_exceedance(means, stds, gamma)


def percentile_nearest(values: Tensor, percentile: float) -> Tensor:
    """The ``percentile``-th percentile of ``values`` by the nearest rank (the released
    ``tfp.stats.percentile`` default interpolation)."""
    return torch.quantile(values.flatten(), percentile / 100.0, interpolation="nearest")
