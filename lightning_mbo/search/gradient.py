"""Gradient ascent over designs: move candidates uphill on a method's predicted score.

Plain torch, no Lightning. The objective maps candidates ``(N, D)`` to one predicted score
per candidate ``(N,)``; candidates are independent, so ascending ``objective(x).sum()``
moves each one by its own gradient. :func:`gradient_ascent` is the rule;
:class:`GradientAscent` is the searcher design search runs when no other is given, its budget
(steps, step size, rule) set by ``--ascent.steps/lr/optimizer`` or else by the method's
``search_defaults``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_mbo.search.contract import AscentOptimizer, SearchData, Searcher, SearchSettings, StepHook
from lightning_mbo.validation import SettingsError, check_choice, check_range


@dataclass
class AscentResult:
    """Final designs and the predicted-score trajectory.

    Attributes:
        x: ``(N, D)`` final designs.
        trajectory: ``(steps + 1, N)`` objective of every candidate before each step and at the end.
        stats: the per-step statistics the hook returned, one list (one value per step) per name.
        diagnostics: what the search did, for results: a list with one entry per candidate (in
            candidate order) is split by replicate, any other value is reported as is; ``flags``
            (a list of short strings) marks what a reader must know (e.g. a policy that never moved).
    """

    x: Tensor
    trajectory: Tensor
    stats: dict[str, list[float]] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def gradient_ascent(
    x0: Tensor,
    objective: Callable[[Tensor], Tensor],
    steps: int,
    lr: float,
    optimizer: AscentOptimizer = "sgd",
    before_step: StepHook | None = None,
) -> AscentResult:
    """Ascend ``objective`` from ``x0``.

    ``sgd`` is design-baselines' plain rule ``x <- x + lr * grad f(x)`` (lr = 0.01 sqrt(D) there);
    ``adam`` is ``torch.optim.Adam`` on ``-f`` (Tri-mentoring, Chen et al. 2023, Algorithm 1 line 13).

    Args:
        x0: ``(N, D)`` starting designs.
        objective: ``(N, D) -> (N,)`` differentiable predicted scores.
        steps: number of ascent steps ``T``.
        lr: step size.
        optimizer: ``sgd`` or ``adam``.
        before_step: called as ``before_step(x, t)`` before step ``t``'s gradient (Tri-mentoring
            mentors its proxies there); ``x`` is detached. What it returns (name -> value, or
            ``None``) is collected into :attr:`AscentResult.stats`.

    Returns:
        :class:`AscentResult`.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr) if optimizer == "adam" else None
    check_choice("ascent optimizer", optimizer, AscentOptimizer)
    trajectory = []
    stats: dict[str, list[float]] = {}
    with torch.enable_grad():
        for t in range(steps):
            if before_step is not None:
                for name, value in (before_step(x.detach(), t) or {}).items():
                    stats.setdefault(name, []).append(float(value))
            f = objective(x)
            trajectory.append(f.detach())
            (grad,) = torch.autograd.grad(f.sum(), x)
            if opt is None:
                with torch.no_grad():
                    x.add_(grad, alpha=lr)
            else:
                x.grad = -grad
                opt.step()
        with torch.no_grad():
            trajectory.append(objective(x).detach())
    return AscentResult(x.detach(), torch.stack(trajectory), stats)


class GradientAscent(Searcher):
    """Gradient ascent on the method's predicted score (:func:`gradient_ascent`), the default searcher.

    Its budget is its settings; what is left ``None`` comes from the method's ``search_defaults``
    (:meth:`configure`): design-baselines' 200 plain steps of ``0.01 √D`` for the surrogates, COMs'
    50 steps of ``2 √D``, RoMA's, ICT's and Tri-mentoring's Adam. It runs the objective's per-step
    hook (Tri-mentoring mentors its proxies there) and ascends every replicate's candidates at once.

    Args:
        steps: ascent steps ``T`` (>= 0; ``None``: the method's).
        lr: step size (> 0; ``None``: the method's).
        optimizer: ``sgd`` (``x ← x + lr ∇f(x)``) or ``adam`` (``None``: the method's).
    """

    name = "gradient_ascent"
    joint_replicates = True
    runs_step_hook = True

    def __init__(self, steps: int | None = None, lr: float | None = None,
                 optimizer: AscentOptimizer | None = None) -> None:
        if steps is not None:
            check_range("--ascent.steps", steps, 0)
        if lr is not None:
            check_range("--ascent.lr", lr, 0, strict=True, hint="a negative step size descends")
        if optimizer is not None:
            check_choice("--ascent.optimizer", optimizer, AscentOptimizer)
        self.steps, self.lr, self.optimizer = steps, lr, optimizer

    def configure(self, defaults: SearchSettings) -> GradientAscent:
        given = {k: v for k, v in vars(self).items() if v is not None}
        return GradientAscent(**{**defaults.as_dict(), **given})

    def resolved(self) -> SearchSettings:
        """The full budget (after :meth:`configure`)."""
        if None in (self.steps, self.lr, self.optimizer):
            raise SettingsError("gradient ascent's steps, lr and optimizer are unset: configure() it with the "
                                "method's search_defaults first")
        return SearchSettings(self.steps, self.lr, self.optimizer)

    def result_name(self, method: str) -> str:
        return method  # the methods' own search: results name the method alone

    def settings(self) -> dict[str, Any]:
        return self.resolved().as_dict()

    def search(self, x0: Tensor, score: Callable[[Tensor], Tensor], data: SearchData, candidate_ids: Tensor,
               num_candidates: int, seed: int) -> AscentResult:
        if data.integers:
            raise SettingsError("gradient ascent needs continuous features, not class integers (--data.encoding "
                                "integers): set a searcher that proposes sequences (--ascent.searcher "
                                "lightning_mbo.search.Reinforce) or use --data.encoding logits")
        budget = self.resolved()
        return gradient_ascent(x0, score, budget.steps, budget.lr, budget.optimizer,
                               getattr(score, "before_step", None))
