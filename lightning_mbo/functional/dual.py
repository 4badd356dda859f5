"""Lagrange multipliers and their dual step (pure torch), shared by every constrained method.

A constraint ``c(ω) <= 0`` enters a Lagrangian ``L(ω, m) = L_D(ω) + m·c(ω)`` with a multiplier
``m >= 0`` written as a function of a dual parameter ``θ``: ``m = θ`` (IGNITE's λ) or
``m = exp(θ)`` (COMs' α, learned as ``log α`` so it stays positive). Dual ascent raises ``m``
while the constraint is violated (``c > 0``) and lowers it while there is slack (``c < 0``):

    θ <- θ − η · ∂/∂θ [−m(θ)·c]        (a descent step on the dual objective −m·c)

* IGNITE (Dao et al., NeurIPS 2024, Alg. 1): ``m = λ``, a plain step: ``λ <- λ + η_λ·c`` with
  ``c = ρ·||∇h|| − ε`` (:func:`dual_update`).
* COMs (Trabucco et al., ICML 2021, Eq. 5): ``m = α = exp(log α)``, an Adam step of lr 1e-2 on
  ``log α`` with gradient ``−α·c`` and ``c = mean(f(x⁻) − f(x)) − τ`` (the released
  ``alpha_loss = α τ − α·overestimation``): the method backpropagates :func:`dual_objective`.

In both, ``c`` is measured before the primal step and does not carry gradient to ``ω``.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["dual_objective", "dual_update"]


def dual_objective(multiplier: Tensor, violation: Tensor) -> Tensor:
    """The dual part of the Lagrangian, to MINIMISE over the multiplier's parameter: ``−Σ_m m·c``, per term.

    Its gradient with respect to the dual parameter ``θ`` is ``−c·∂m/∂θ`` (``−c`` for ``m = θ``,
    ``−m·c`` for ``m = exp θ``); ``c`` is detached, so the primal weights get nothing from it.

    Args:
        multiplier: ``(M,)`` multipliers ``m(θ)``, differentiable in ``θ``.
        violation: ``(M,)`` constraint values ``c`` (positive when violated).

    Returns:
        ``(M,)`` the terms ``−m·c`` (their sum is the objective).
    """
    return -multiplier * violation.detach().to(multiplier.dtype)


def dual_update(lmbda: Tensor, violation: Tensor, lr: float, clamp: bool = False) -> Tensor:
    """One plain step on :func:`dual_objective` with ``m = λ``: ``λ <- λ + η_λ·c`` (IGNITE's BDMM).

    The released IGNITE code never clamps, so ``λ`` may become negative (it then pulls
    ``ρ·||∇h||`` up towards ``ε``); ``clamp=True`` projects onto ``λ >= 0`` as in the
    paper's intent.

    Args:
        lmbda: current multipliers, ``(M,)`` (or a scalar).
        violation: ``(M,)`` constraint values ``c`` (IGNITE: ``ρ·||∇h|| − ε``), measured before the ω step.
        lr: dual step size ``η_λ`` (the released code: 1e-3).
        clamp: clamp the result at 0.

    Returns:
        New multipliers (a new detached tensor; ``lmbda`` is not modified).
    """
    new = lmbda.detach() + lr * violation.detach().to(lmbda.dtype)
    return new.clamp_min(0.0) if clamp else new
