"""Conservative objective models (COMs): the equations (pure torch).

Trabucco, Kumar, Geng, Levine, "Conservative Objective Models for Effective Offline Model-Based
Optimization", ICML 2021. A forward model ``f`` is fitted by regression while its predictions
at designs found by gradient ascent on ``f`` itself ("negatives") are pushed below its
predictions on the data, by a Lagrangian with multiplier ``α`` (Eq. 5):

    x⁻ = x_T,  x_{t+1} = x_t + η ∇_x f(x_t),  x_0 = x  (stop-gradient; Eq. 4)
    L(ω, α) = E_b[(y − f(x))²] + α (E_b[f(x⁻) − f(x)] − τ)

``ω`` descends ``L``; ``log α`` takes a dual step (:mod:`lightning_mbo.functional.dual`) that
raises α while the over-estimation gap ``E_b[f(x⁻) − f(x)]`` exceeds its limit ``τ``. The
released trainer is ``design_baselines/coms_cleaned/trainers.py`` (``optimize`` and
``train_step``); its particle entropy bonus and input noise are 0 in every released config and
are not offered here.

Shapes: stacked networks ``M`` first (:class:`lightning_mbo.nn.StackedMLP`), a batch of ``b`` rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["conservative_losses", "overestimation", "particle_ascent"]


def particle_ascent(score: Callable[[Tensor], Tensor], x: Tensor, lr: float, steps: int) -> Tensor:
    """COMs' negatives (Eq. 4): ``steps`` plain steps ``x ← x + η ∇_x Σ f(x)`` from ``x``, stop-gradient.

    Each row climbs its own prediction (rows are independent, so the gradient of the sum is each
    row's own). No gradient reaches the model's weights.

    Args:
        score: ``(..., b, D) -> (..., b)`` the model's predictions.
        x: ``(..., b, D)`` starting designs (the training batch).
        lr: step size ``η`` (the released code: ``particle_lr · √D``, 2.0·√D on TFBind).
        steps: number of steps ``T`` (the released code: 50).

    Returns:
        ``(..., b, D)`` detached negatives ``x⁻``.
    """
    x = x.detach()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(score(x).sum(), x)
        x = (x + lr * grad).detach()
    return x


def overestimation(pred: Tensor, pred_neg: Tensor) -> Tensor:
    """Per-row over-estimation ``f(x⁻) − f(x)`` ``(M, b)`` (the released ``overestimation``).

    Args:
        pred: ``(M, b)`` predictions on the batch.
        pred_neg: ``(M, b)`` predictions on its negatives.
    """
    return pred_neg - pred


def conservative_losses(y: Tensor, pred: Tensor, pred_neg: Tensor, alpha: Tensor) -> Tensor:
    """Per-row model loss ``(y − f(x))² + α_m (f(x⁻) − f(x))`` ``(M, b)`` (Eq. 5 without the constant ``−α τ``).

    Its batch mean is the released ``total_loss``; ``α`` is detached here (the multiplier's own
    step is :func:`lightning_mbo.functional.dual.dual_objective`).

    Args:
        y: ``(M, b)`` or ``(b,)`` normalised scores.
        pred: ``(M, b)`` predictions on the batch.
        pred_neg: ``(M, b)`` predictions on its negatives.
        alpha: ``(M,)`` multipliers.
    """
    return (y - pred) ** 2 + alpha.detach().unsqueeze(-1) * overestimation(pred, pred_neg)
