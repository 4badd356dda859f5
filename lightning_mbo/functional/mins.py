"""MINs' equations (pure torch): the score reweighting, the weighted WGAN-GP losses and the
Gumbel-softmax relaxation of discrete designs.

Kumar, Levine, "Model Inversion Networks for Model-Based Optimization", NeurIPS 2020
(arXiv:1912.13464), as design-baselines releases it and the IGNITE repository runs it
(``design_baselines/mins_IGNITE/``: ``utils.py``, ``trainers.py``, ``nets.py``, the same as
``design_baselines/mins/`` but for the oracle's IGNITE step; ``disc_noise`` in
``design_baselines/utils.py``). A generator ``G(z, y)`` is trained as the inverse map
``y -> x`` by a Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) whose every term
is weighted per sample by ``w(y)``, the paper's reweighting of the training distribution towards
high scores in its released form (``utils.py:52-84``):

    h_k = share of the scores in bin k of a 20-bin histogram,  e_k = the bin's upper edge,
    p_k ∝ softmax_k(e_k / τ) · h_k / (h_k + 1e-3),             τ = ``base_temp`` (released 0.1),
    w_i = clip(p_{k(i)} / (h_{k(i)} + 1e-7), 0, 5);

critic loss   mean_i w_i (−D(x_i, y_i) + D(G(z_i, y_i), y_i) + λ (1 − ||∇_x̂ D(x̂_i, y_i)||)²),
generator loss mean_i w_i (−D(G(z_i, y_i), y_i)),  with x̂ = e x + (1 − e) G(z, y), e ~ U(0, 1)
per sample, and λ = 10 (``trainers.py:445-556``). Discrete designs are relaxed one-hot: the
generator samples a Gumbel-softmax at a temperature annealed linearly from 5 to 1 over
training (``trainers.py:700-705``), and the real one-hot designs reach the critic as a
Gumbel-softmax sample of ``keep · onehot + (1 − keep)/C`` at the same temperature
(``disc_noise``, ``keep`` = 0.99).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "bin_index",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "gumbel_softmax",
    "histogram_weights",
    "randomized_labels",
    "relax_one_hot",
    "target_bin_mass",
    "temperature",
]


def target_bin_mass(y: Tensor, bins: int = 20, base_temp: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """The reweighted distribution over score bins (the released ``get_p_y``).

    Args:
        y: ``(N,)`` scores (normalised).
        bins: equal-width bins between ``min y`` and ``max y`` (numpy's ``histogram``; a range of
            width 0 becomes ``[y - 0.5, y + 0.5]``, as numpy does).
        base_temp: ``τ`` of ``softmax(e / τ)`` over the upper bin edges ``e``.

    Returns:
        ``(p (bins,), h (bins,), edges (bins + 1,))``: the target mass of each bin
        ``p_k = softmax(e / τ)_k · h_k / (h_k + 1e-3)`` normalised (with the released ``+ 1e-7`` in
        the denominator), the share ``h`` of the scores in each bin, and the bin edges; float64.
    """
    y = y.detach().double().reshape(-1)
    lo, hi = float(y.min()), float(y.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64, device=y.device)
    h = torch.bincount(bin_index(y, edges), minlength=bins).double()
    h = h / h.sum()
    soft = torch.softmax(edges[1:] / base_temp, dim=0)
    p = soft * (h / (h + 1e-3))
    return p / (p.sum() + 1e-7), h, edges


def bin_index(y: Tensor, edges: Tensor) -> Tensor:
    """``(N,)`` the bin of each score: ``k`` with ``edges[k] <= y < edges[k + 1]``, the last bin
    closed (numpy's ``histogram`` and the released ``minimum(digitize(y, edges[1:]), bins - 1)``)."""
    return torch.bucketize(y, edges[1:], right=True).clamp(max=len(edges) - 2)


def histogram_weights(y: Tensor, bins: int = 20, base_temp: float = 0.1, max_weight: float = 5.0) -> Tensor:
    """MINs' per-sample weights ``w_i = clip(p_{k(i)} / (h_{k(i)} + 1e-7), 0, max_weight)`` ``(N,)``.

    Args:
        y: ``(N,)`` scores (normalised).
        bins: histogram bins (released: 20).
        base_temp: temperature of the softmax over upper bin edges (released: 0.1).
        max_weight: the clip (released: 5).

    Returns:
        ``(N,)`` weights in ``y``'s dtype.
    """
    p, h, edges = target_bin_mass(y, bins, base_temp)
    k = bin_index(y.detach().double().reshape(-1), edges)
    return (p[k] / (h[k] + 1e-7)).clamp(0.0, max_weight).to(y.dtype)


def gumbel_softmax(logits: Tensor, temp: float, generator: torch.Generator | None = None) -> Tensor:
    """A relaxed one-hot sample ``softmax((log_softmax(logits) + g) / temp)`` over the last dim,
    ``g`` standard Gumbel noise (``tfpd.RelaxedOneHotCategorical(temp, logits).sample()``).

    Args:
        logits: ``(..., C)`` unnormalised log-probabilities.
        temp: temperature (> 0); as ``temp → 0`` the sample tends to the one-hot of a draw from
            ``softmax(logits)`` (the Gumbel-max trick), as ``temp → ∞`` to uniform.
        generator: the random stream.

    Returns:
        ``(..., C)`` points of the simplex.
    """
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(logits.dtype).tiny)))
    return torch.softmax((torch.log_softmax(logits, -1) + gumbel) / temp, dim=-1)


def relax_one_hot(x: Tensor, keep: float, temp: float, generator: torch.Generator | None = None) -> Tensor:
    """How the released code feeds real one-hot designs to the critic (``disc_noise``): a
    Gumbel-softmax sample of ``keep · x + (1 − keep) / C`` at ``temp``.

    Args:
        x: ``(..., C)`` one-hot (or any points of the simplex).
        keep: mass kept on the observed class (released: 0.99).
        temp: the current temperature (the generator's).
        generator: the random stream.
    """
    p = keep * x + (1.0 - keep) / x.shape[-1]
    return gumbel_softmax(p.log(), temp, generator)


def gradient_penalty(critic: Callable[[Tensor, Tensor], Tensor], x_real: Tensor, x_fake: Tensor, y: Tensor,
                     e: Tensor) -> Tensor:
    """WGAN-GP's penalty ``(1 − ||∇_x̂ D(x̂, y)||₂)²`` ``(B,)`` at ``x̂ = e x_real + (1 − e) x_fake``.

    The gradient keeps its graph (``create_graph``), so the penalty trains the critic.

    Args:
        critic: ``(x (B, ...), y (B,)) -> (B,)``.
        x_real: ``(B, ...)`` real designs (relaxed one-hot ``(B, L, C)`` or features ``(B, D)``).
        x_fake: ``(B, ...)`` generated designs.
        y: ``(B,)`` their conditioning scores.
        e: ``(B,)`` interpolation weights in ``[0, 1]``.

    Returns:
        ``(B,)`` the penalty of each sample; the norm is over all of a design's entries.
    """
    e = e.reshape(-1, *([1] * (x_real.dim() - 1)))
    x_hat = (x_real * e + x_fake * (1 - e)).detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(critic(x_hat, y).sum(), x_hat, create_graph=True)
    return (1.0 - grad.flatten(1).norm(dim=-1)) ** 2


def critic_loss(d_real: Tensor, d_fake: Tensor, penalty: Tensor, w: Tensor, penalty_weight: float = 10.0) -> Tensor:
    """``mean_i w_i (−D(x_i) + D(G(z_i)) + λ penalty_i)`` from ``(B,)`` terms (a scalar)."""
    return (w * (-d_real + d_fake + penalty_weight * penalty)).mean()


def generator_loss(d_fake: Tensor, w: Tensor) -> Tensor:
    """``mean_i w_i (−D(G(z_i, y_i), y_i))`` from ``(B,)`` terms (a scalar)."""
    return (w * -d_fake).mean()


def temperature(epoch: int, epochs: int, start: float = 5.0, final: float = 1.0) -> float:
    """The Gumbel-softmax temperature of ``epoch`` (0-based) of ``epochs``: linear from ``start``
    at the first epoch to ``final`` at the last (``final`` when ``epochs`` is 1)."""
    if epochs <= 1:
        return final
    frac = epoch / (epochs - 1)
    return final * frac + start * (1.0 - frac)


def randomized_labels(y: Tensor, n: int, rate: float, base_temp: float = 0.1, bins: int = 20,
                      generator: torch.Generator | None = None) -> Tensor:
    """The released "randomized labelling" of ``get_synthetic_data`` (``utils.py:120-172``):
    ``n`` scores drawn as the LOWER edge of a bin sampled from the target mass ``p`` of
    :func:`target_bin_mass`, plus ``Exponential(rate)`` noise.

    Args:
        y: ``(N,)`` the current scores.
        n: labels to draw.
        rate: the exponential noise's rate (> 0; its mean is ``1 / rate``).
        base_temp: as :func:`target_bin_mass`.
        bins: as :func:`target_bin_mass`.
        generator: the random stream (a CPU generator).

    Returns:
        ``(n,)`` labels in ``y``'s dtype, on ``y``'s device.
    """
    if n == 0:
        return y.new_zeros(0)
    p, _, edges = target_bin_mass(y.cpu(), bins, base_temp)
    k = torch.multinomial(p.float(), n, replacement=True, generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    noise = -torch.log1p(-u) / rate
    return (edges[k] + noise).to(y)
