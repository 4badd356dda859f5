"""IGNITE as a plug-in: the gradient-norm constraint for any stacked-ensemble surrogate.

Dao, Nguyen, Truong, Hoang, "Incorporating Surrogate Gradient Norm to Improve Offline
Optimization Techniques", NeurIPS 2024. Training minimises ``L_D(ω)`` subject
to ``ρ ||∇_ω h(ω)|| <= ε`` with BDMM: every minibatch a descent step on ω with
``∇L_D + λ ρ ∇||∇h||`` and an ascent step ``λ <- λ + η_λ (ρ ||∇h|| - ε)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_mbo.functional.dual import dual_update
from lightning_mbo.functional.gradnorm import (
    NormFn,
    Reduce,
    constraint_violation,
    grad_h,
    lookup_sq_norms,
    member_norms,
    member_views,
    norm_gradient_finite_difference,
    norm_penalty_term,
)
from lightning_mbo.validation import check_choice, check_range

GradMode = Literal["finite_difference", "exact"]
EmbeddingNorm = Literal["per_lookup", "dense"]


@dataclass
class Ignite:
    """Settings of the gradient-norm constraint (defaults: the authors' released code).

    Attributes:
        rho: perturbation radius ρ of the sharpness bound.
        eps: constraint level ε on ρ||∇h||.
        lambda_init: initial multiplier λ_0 (the paper says 1e-2; the released code 1e-3).
        lambda_lr: multiplier step size η_λ.
        r: finite-difference step.
        grad_mode: ``finite_difference`` (what the authors ran) or ``exact`` (the exact
            ``∇||∇h||``, by one backward of ``<∇h, u>`` with ``u = ∇h/||∇h||`` held fixed).
        clamp_lambda: keep λ >= 0 (the paper's intent; the released code never clamps).
        fixed_lambda: never update λ (the "IGNITE-2" variant: λ = 1e-2, ρ = r = 0.2).
        embedding_norm: for members whose input is an embedding, how the table enters ``||∇h||``:
            ``per_lookup`` (the released code: TensorFlow's ``IndexedSlices`` gradient, one row per
            lookup, rows of a repeated id not summed) or ``dense`` (the table's dense gradient).
            Either way the shift direction is the dense gradient divided by that norm, and the
            exact mode is the ``r -> 0`` limit of the finite difference. No effect without an embedding.
    """

    rho: float = 0.05
    eps: float = 0.1
    lambda_init: float = 1e-3
    lambda_lr: float = 1e-3
    r: float = 0.05
    grad_mode: GradMode = "finite_difference"
    clamp_lambda: bool = False
    fixed_lambda: bool = False
    embedding_norm: EmbeddingNorm = "per_lookup"

    def __post_init__(self) -> None:
        check_choice("grad_mode (ignite.grad_mode)", self.grad_mode, GradMode)
        check_choice("embedding_norm (ignite.embedding_norm)", self.embedding_norm, EmbeddingNorm)
        for name in ("rho", "r"):
            check_range(f"ignite.{name}", getattr(self, name), 0, strict=True)
        for name in ("eps", "lambda_lr"):
            check_range(f"ignite.{name}", getattr(self, name), 0)


# Settings travel in checkpoints' hyper-parameters; let weights-only loading (resume) accept them.
torch.serialization.add_safe_globals([Ignite])


class GradNormConstraint(nn.Module):
    """The constraint's state (one λ per ensemble member, a checkpointed buffer) and its step.

    Args:
        settings: :class:`Ignite` settings.
        members: number of stacked members (each gets its own λ).
        embedding: whether the members' input is an embedding (then ``settings.embedding_norm``
            applies; reported by :meth:`summary`).
    """

    def __init__(self, settings: Ignite, members: int, embedding: bool = False) -> None:
        super().__init__()
        self.settings = settings
        self.embedding = embedding
        self._workspace: list[Tensor] = []  # the finite difference's shifted point, reused every step
        self.register_buffer("lmbda", torch.full((members,), float(settings.lambda_init)))
        # Exponential moving average (0.99) of ||∇h|| per member, for reports; NaN until the first step.
        self.register_buffer("norm_ema", torch.full((members,), float("nan")))

    def backward(
        self,
        loss: Tensor,
        h: Tensor,
        h_fn: Callable[[], Tensor],
        params: Sequence[Tensor],
        backward: Callable[[Tensor], None],
        reduce: Reduce | None = None,
        lookups: Sequence[tuple[Tensor, Tensor]] = (),
    ) -> Tensor:
        """Backward of ``loss`` plus the penalty: leaves ``∇L_D + λ_m ρ ∇||∇h_m||`` in ``.grad``.

        ``∇h`` is taken from the forward that produced ``loss`` (no second forward). Exact mode
        differentiates ``loss + Σ_m λ_m ρ <∇h_m, u_m>`` with ``u = ∇h/||∇h||`` held fixed in ONE
        backward: its gradient is ``∇L_D + λ ρ H u = ∇L_D + λ ρ ∇||∇h||``. Finite-difference mode
        backpropagates ``loss`` and adds ``λ ρ (∇h(ω + r u) − ∇h(ω)) / r`` (one more forward and
        backward at the shifted weights, which are then restored bit for bit).

        Args:
            loss: the summed data loss of the members.
            h: ``(M,)`` each member's mean prediction over the batch, from the same forward.
            h_fn: re-runs that forward (finite-difference mode evaluates it at shifted weights).
            params: the trainable parameters, member dimension first.
            backward: how to backpropagate (``LightningModule.manual_backward``, which DDP syncs).
            reduce: averages per-parameter tensors over data-parallel ranks (``None``: one process).
            lookups: ``(table, looked-up vectors)`` pairs of the forward that produced ``h``: the
                embedding tables among ``params`` and their lookups ``(M, ...)`` (the embedding
                layer's output). With ``embedding_norm: per_lookup`` the norm takes the lookups'
                gradients in place of the tables' (:func:`lookup_sq_norms`).

        Returns:
            ``(M,)`` norms ``||∇h||`` of the global batch, before the update.
        """
        s = self.settings
        params = list(params)
        scale = self.lmbda * s.rho
        tables = {id(t) for t, _ in lookups} if s.embedding_norm == "per_lookup" else set()
        looked_up = [e for t, e in lookups if id(t) in tables]
        exact = s.grad_mode == "exact"
        g = grad_h(h, params + looked_up, create_graph=exact, retain_graph=True)
        g, lookup_grads = g[:len(params)], [t.detach() for t in g[len(params):]]
        norm_fn = self._norm_fn(params, tables, lookup_grads, reduce) if looked_up else None
        if exact:
            term, norms = norm_penalty_term(g, scale, reduce, norm_fn)
            backward(loss + term)
            return norms
        if reduce is not None:
            g = reduce(g)
        backward(loss)
        if [(w.shape, w.dtype, w.device) for w in self._workspace] != [(p.shape, p.dtype, p.device) for p in params]:
            self._workspace = [torch.empty_like(p) for p in params]
        norms, estimate = norm_gradient_finite_difference(h_fn, params, r=s.r, grads=g, reduce=reduce,
                                                          norm_fn=norm_fn, workspace=self._workspace)
        torch._foreach_addcmul_([p.grad for p in params], estimate, member_views(scale, estimate))
        return norms

    @staticmethod
    def _norm_fn(params: list[Tensor], tables: set[int], lookup_grads: list[Tensor],
                 reduce: Reduce | None) -> NormFn:
        """The released embedding norm: the tables' dense gradients replaced by their lookups' rows."""
        members = params[0].shape[0]
        sq = lookup_sq_norms(lookup_grads, members).to(params[0])
        if reduce is not None:
            # Global h = mean of the ranks' h: its lookup rows are each rank's rows / world.
            world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
            sq = reduce([sq])[0] / world
        keep = [i for i, p in enumerate(params) if id(p) not in tables]
        return lambda g: member_norms([g[i] for i in keep], extra_sq=sq)

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
            # The norm that ran: "dense" for members without an embedding (every gradient dense).
            "norm": s.embedding_norm if self.embedding else "dense",
        }
