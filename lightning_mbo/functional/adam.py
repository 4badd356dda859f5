"""One Adam step as a pure, differentiable tensor function (Kingma and Ba, "Adam", ICLR 2015, Algorithm 1).

Two forms, which differ only in where ``ε`` enters:

* ``torch``: ``torch.optim.Adam``'s rule,
  ``θ ← θ - (lr / b₁) m / (√v / √b₂ + ε)``;
* ``higher``: the differentiable Adam of the ``higher`` library (version 0.2.1, ``DifferentiableAdam``),
  ``θ ← θ - (lr √b₂ / b₁) m / (√v + ε)``, i.e. ``ε`` is not divided by ``√b₂``;

with ``m ← β₁ m + (1 - β₁) g``, ``v ← β₂ v + (1 - β₂) g²``, ``b₁ = 1 - β₁ᵗ``, ``b₂ = 1 - β₂ᵗ``
and ``t`` the step number after the update (1 for the first). Both forms agree to ``O(ε)``; the
``higher`` form is what a virtual step through ``higher`` computes (ICT's meta step), the ``torch``
form what a real ``torch.optim.Adam`` step computes.

``√v`` has an infinite derivative at ``v = 0`` (an entry whose gradient has always been 0, e.g. of
a dead ReLU unit); as ``higher`` does (it masks the gradient flowing into ``v`` where ``v == 0``),
the derivative through ``√v`` is taken as 0 there, so differentiating the step never gives NaN.

This module imports no Lightning.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["AdamForm", "adam_step"]

AdamForm = Literal["torch", "higher"]


def _sqrt_masked(v: Tensor) -> Tensor:
    """``√v`` with derivative 0 (not ∞) where ``v == 0``."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def adam_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: float | Tensor,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    form: AdamForm = "torch",
) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam update of one tensor, without weight decay or AMSGrad; differentiable in every input.

    Args:
        param: ``θ``, any shape.
        grad: ``g``, the same shape.
        exp_avg: ``m`` before the step (zeros before the first), the same shape.
        exp_avg_sq: ``v`` before the step (zeros before the first), the same shape.
        step: ``t``, the step number AFTER this update (1 for the first); a number or a 0-dim tensor
            (e.g. one per member under ``torch.func.vmap``).
        lr: learning rate.
        betas: ``(β₁, β₂)``.
        eps: ``ε``.
        form: ``torch`` (``torch.optim.Adam``) or ``higher`` (``higher``'s differentiable Adam); see
            the module docstring.

    Returns:
        ``(θ', m', v')``, each of ``param``'s shape; no input is modified.
    """
    beta1, beta2 = betas
    m = exp_avg * beta1 + (1 - beta1) * grad
    v = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    root = _sqrt_masked(v)
    if form == "torch":
        new = param - (lr / bias1) * (m / (root / bias2**0.5 + eps))
    elif form == "higher":
        new = param - (lr * bias2**0.5 / bias1) * (m / (root + eps))
    else:
        raise ValueError(f"unknown Adam form {form!r}; choose 'torch' or 'higher'")
    return new, m, v
