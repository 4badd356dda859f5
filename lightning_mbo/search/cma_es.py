"""CMA-ES over designs, one strategy per starting design (Hansen's ``cma`` package).

As IGNITE's and design-baselines' released code runs it (Trabucco et al., "Design-Bench",
ICML 2022; Dao et al., NeurIPS 2024, Section 5): every one of the top-128 starting designs
``x0`` (normalised features; for discrete tasks z-scored logits) starts its own covariance
matrix adaptation evolution strategy (Hansen & Ostermeier 2001),

    x_k ~ m + σ N(0, C),  k = 1..λ;   fitness(x) = -f(x)   (f: the method's predicted score)

with ``m = x0``, ``σ0 = 0.5``, ``λ = 4 + ⌊3 ln D⌋`` (cma's default: 13 for TFBind8's D = 24, 14
for TFBind10's 30), for at most ``iterations`` iterations or until the strategy's own stopping
rules fire. Each candidate's result is the best point the surrogate saw (``es.result.xbest``).
The strategies run in lockstep so that every iteration scores all ``λ x C`` points in ``λ``
batched calls.

Diagnostics (:attr:`~lightning_mbo.search.gradient.AscentResult.diagnostics`), per candidate: the
strategy's stop reasons (the keys of cma's ``es.stop()``: ``maxiter`` when it used the whole
budget), the iterations it ran, the distance of the returned point from its start and its
largest ``|z|`` (normalised space); and the data's largest ``|z|``. On TFBind8 at the released
settings every strategy stops by cma's ``tolfacupx`` rule (its step size grew more than a
thousandfold) after 52-79 iterations, the returned point thousands of z-units from its start, far
outside the data, where the surrogate's (piecewise linear) prediction is absurdly high; the
released loop does the same. That behaviour is kept, and flagged.

Plain numpy/torch plus ``cma``; no Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_mbo.search.contract import SearchData, Searcher
from lightning_mbo.search.gradient import AscentResult
from lightning_mbo.search.report import number, span
from lightning_mbo.validation import SettingsError, check_range


def _randn(seed: int, candidate: int) -> Callable[..., np.ndarray]:
    """A strategy's own standard-normal draws (cma's ``randn`` option): strategies running in
    lockstep must not share numpy's global generator, or each one's samples would depend on the others."""
    rng = np.random.default_rng([seed, candidate])
    return lambda *shape: rng.standard_normal(shape)


class CMAES(Searcher):
    """CMA-ES from every starting design.

    Args:
        sigma: initial step size ``σ0`` (released: 0.5).
        iterations: at most this many iterations per strategy (released: 100).
        popsize: population ``λ`` (``null``: cma's default ``4 + ⌊3 ln D⌋``, as released).
    """

    name = "cma_es"

    def __init__(self, sigma: float = 0.5, iterations: int = 100, popsize: int | None = None) -> None:
        check_range("cma_es sigma (--ascent.searcher.init_args.sigma)", sigma, 0, strict=True)
        check_range("cma_es iterations (--ascent.searcher.init_args.iterations)", iterations, 1,
                    hint="a budget of zero searches nothing")
        if popsize is not None:
            check_range("cma_es popsize (--ascent.searcher.init_args.popsize)", popsize, 2)
        self.sigma, self.iterations, self.popsize = sigma, iterations, popsize

    def search(self, x0: Tensor, score: Callable[[Tensor], Tensor], data: SearchData | None = None,
               candidate_ids: Tensor | None = None, num_candidates: int | None = None, seed: int = 0) -> AscentResult:
        """Search from ``x0``.

        Args:
            x0: ``(C, D)`` starting designs.
            score: ``(C, D) -> (C,)`` the predicted score, row ``i`` scored as candidate ``i``.
            data: unused (CMA-ES starts from ``x0``).
            candidate_ids: ``(C,)`` the candidates' indices over all processes (each strategy draws
                from its own generator seeded by the run's ``seed`` and its index, so results do
                not depend on how candidates are split over processes); ``None``: ``0 .. C-1``.
            num_candidates: unused (one result per starting design).
            seed: the run's seed.

        Returns:
            The best point each strategy saw, and ``(iterations + 1, C)`` the best predicted
            score so far before the first and after every iteration.
        """
        if data is not None and data.integers:
            raise SettingsError("cma_es searches continuous features, not class integers: use --data.encoding logits")
        import cma  # noqa: PLC0415  (an extra: pip install "lightning_mbo[search]")

        c, d = x0.shape
        candidate_ids = torch.arange(c) if candidate_ids is None else candidate_ids
        opts = {"verbose": -9, "maxiter": self.iterations, **({"popsize": self.popsize} if self.popsize else {})}
        strategies = [
            cma.CMAEvolutionStrategy(x0[i].detach().double().cpu().numpy(), self.sigma,
                                     {**opts, "seed": np.nan, "randn": _randn(int(seed), int(candidate_ids[i]))})
            for i in range(c)
        ]
        with torch.no_grad():
            best = score(x0).detach().double().cpu().numpy()
        best_x = x0.detach().double().cpu().numpy().copy()
        trajectory = [best.copy()]
        for _ in range(self.iterations):
            active = [i for i, es in enumerate(strategies) if not es.stop()]
            if not active:
                break
            asked = {i: np.asarray(strategies[i].ask()) for i in active}
            lam = max(len(a) for a in asked.values())
            # (λ, C, D): every candidate's k-th point in one batch; inactive rows keep their best.
            points = np.broadcast_to(best_x, (lam, c, d)).copy()
            for i, a in asked.items():
                points[: len(a), i] = a
            with torch.no_grad():
                f = torch.stack([score(torch.as_tensor(points[k]).to(x0)) for k in range(lam)])
            f = f.detach().double().cpu().numpy()  # (λ, C)
            for i, a in asked.items():
                strategies[i].tell(list(a), list(-f[: len(a), i]))
                k = int(np.argmax(f[: len(a), i]))
                if f[k, i] > best[i]:
                    best[i], best_x[i] = f[k, i], a[k]
            trajectory.append(best.copy())
        # cma's own record of the best point (the same point as best_x unless ties).
        result = np.stack([es.result.xbest if es.result.xbest is not None else best_x[i]
                           for i, es in enumerate(strategies)])
        diagnostics = self._diagnostics(strategies, result, x0.detach().double().cpu().numpy(), data)
        return AscentResult(torch.as_tensor(result).to(x0), torch.as_tensor(np.stack(trajectory)).to(x0),
                            diagnostics=diagnostics)

    def _diagnostics(self, strategies: list, result: np.ndarray, x0: np.ndarray,
                     data: SearchData | None) -> dict[str, Any]:
        """Per candidate: stop reasons, iterations, distance from the start, largest ``|z|``; flags."""
        stops = ["+".join(sorted(es.stop())) or "none" for es in strategies]
        iterations = [int(es.countiter) for es in strategies]
        distance = np.linalg.norm(result - x0, axis=1)
        max_z = np.abs(result).max(axis=1)
        out: dict[str, Any] = {"stop": stops, "iterations": iterations,
                               "distance_from_start": [float(v) for v in distance],
                               "max_abs_z": [float(v) for v in max_z]}
        flags = []
        c = len(strategies)
        for reason in sorted(set(stops)):
            if reason != "maxiter":
                its = [n for s, n in zip(stops, iterations, strict=True) if s == reason]
                flags.append(f"cma_es: {len(its)}/{c} strategies stopped by {reason} after {span(its)} "
                             f"iteration{'s' if max(its) > 1 else ''}")
        if data is not None:
            data_z = float(data.x.detach().abs().max())
            out["data_max_abs_z"] = data_z
            outside = max_z > data_z
            if outside.any():
                flags.append(f"cma_es: {int(outside.sum())}/{c} returned points outside the data's range (max |z| "
                             f"{span(max_z[outside].tolist())}, the data's {number(data_z)}), "
                             f"{span(distance[outside].tolist())} from their starts")
        out["flags"] = flags
        return out
