"""IGNITE as a plug-in: the gradient-norm constraint for any stacked-ensemble surrogate.

Dao, Nguyen, Truong, Hoang, "Incorporating Surrogate Gradient Norm to Improve Offline
Optimization Techniques", NeurIPS 2024 (METHODS.md 3). Training minimises ``L_D(ω)`` subject
to ``ρ ||∇_ω h(ω)|| <= ε`` with BDMM: every minibatch a descent step on ω with
``∇L_D + λ ρ ∇||∇h||`` and an ascent step ``λ <- λ + η_λ (ρ ||∇h|| - ε)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_mbo.functional.gradnorm import constraint_violation, dual_update, penalty_gradients


@dataclass
class Ignite:
    """Settings of the gradient-norm constraint (defaults: the authors' released code).

    Attributes:
        rho: perturbation radius ρ of the sharpness bound.
        eps: constraint level ε on ρ||∇h||.
        lambda_init: initial multiplier λ_0 (the paper says 1e-2; the released code 1e-3).
        lambda_lr: multiplier step size η_λ.
        r: finite-difference step.
        grad_mode: ``finite_difference`` (what the authors ran) or ``exact`` (double backward).
        clamp_lambda: keep λ >= 0 (the paper's intent; the released code never clamps).
        fixed_lambda: never update λ (the "IGNITE-2" variant: λ = 1e-2, ρ = r = 0.2).
    """

    rho: float = 0.05
    eps: float = 0.1
    lambda_init: float = 1e-3
    lambda_lr: float = 1e-3
    r: float = 0.05
    grad_mode: Literal["finite_difference", "exact"] = "finite_difference"
    clamp_lambda: bool = False
    fixed_lambda: bool = False


# Settings travel in checkpoints' hyper-parameters; let weights-only loading (resume) accept them.
torch.serialization.add_safe_globals([Ignite])


class GradNormConstraint(nn.Module):
    """The constraint's state (one λ per ensemble member, a checkpointed buffer) and its step.

    Args:
        settings: :class:`Ignite` settings.
        members: number of stacked members (each gets its own λ).
    """

    def __init__(self, settings: Ignite, members: int) -> None:
        super().__init__()
        self.settings = settings
        self.register_buffer("lmbda", torch.full((members,), float(settings.lambda_init)))
        # Exponential moving average (0.99) of ||∇h|| per member, for reports; NaN until the first step.
        self.register_buffer("norm_ema", torch.full((members,), float("nan")))

    def add_penalty(
        self,
        h_fn: Callable[[], Tensor],
        params: Sequence[Tensor],
        reduce: Callable[[list[Tensor]], list[Tensor]] | None = None,
    ) -> Tensor:
        """Add ``λ_m ρ ∇||∇h_m||`` to every parameter's ``.grad`` and return ``||∇h||`` ``(M,)``.

        Call after the data-loss backward and before the optimizer step; then call
        :meth:`update_lambda` with the returned norms (measured before the ω update).

        Args:
            h_fn: re-runs the forward on the current batch, returning each member's mean prediction ``(M,)``.
            params: the trainable parameters, member dimension first.
            reduce: averages a list of per-parameter tensors over data-parallel ranks (DDP);
                ``None`` in a single process.
        """
        s = self.settings
        grads, norms = penalty_gradients(h_fn, params, self.lmbda, s.rho, s.grad_mode, r=s.r, reduce=reduce)
        for p, g in zip(params, grads, strict=True):
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)
        return norms

    @torch.no_grad()
    def update_lambda(self, norms: Tensor) -> Tensor:
        """BDMM ascent on λ from the norms measured before the ω step; returns the violation."""
        s = self.settings
        violation = constraint_violation(norms, s.rho, s.eps)
        self.norm_ema.copy_(torch.where(self.norm_ema.isnan(), norms, 0.99 * self.norm_ema + 0.01 * norms))
        if not s.fixed_lambda:
            self.lmbda.copy_(dual_update(self.lmbda, violation, s.lambda_lr, s.clamp_lambda))
        return violation

    def summary(self) -> dict[str, object]:
        """Where the constraint stands: λ, ρ||∇h|| (moving average) and ε, per member."""
        s = self.settings
        return {
            "lambda": self.lmbda.tolist(),
            "rho_grad_norm": (s.rho * self.norm_ema).tolist(),
            "eps": s.eps,
            "grad_mode": s.grad_mode,
        }
