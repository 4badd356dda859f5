"""ICT's fine-tuning, reference backend: one proxy triple, written as the released code runs it, through ``higher``.

Yuan, Chen, Liu, Neiswanger, Liu, "Importance-aware Co-teaching for Offline Model-based
Optimization", NeurIPS 2023; released code ``ICT.py:59-233`` (torch 1.7.1, higher 0.2.1): three
``nn.Module`` proxies, each with its own ``torch.optim.Adam``; per round, the two students' virtual
steps in nested ``higher.innerloop_ctx`` blocks (the real optimizers' state copied in), the weight
gradient by autograd through them, ``F.normalize`` and clamps, then one real ``optimizer.step()``
per student. The released broadcasting is written literally (``(n,) * (n, 1)`` and ``(n,) * (K, 1)``
summed), so this file shares no equation code with :mod:`lightning_mbo.functional.ict`; the
batched path (:func:`lightning_mbo.functional.ict_batched.finetune_batched`) is proven equal
to it by the tests (``tests/functional/test_ict.py``). Slow: the reference, not the default.

This module imports no Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence

import higher
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_mbo.functional.ict import ROUNDS, FineTuning

__all__ = ["finetune_higher", "loss_coteaching"]


def loss_coteaching(pred_1: Tensor, pred_2: Tensor, target: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The released ``loss_coteaching`` (``ICT.py:9-25``), with a stable sort.

    Args:
        pred_1: ``(K, 1)`` student 1's predictions.
        pred_2: ``(K, 1)`` student 2's predictions.
        target: ``(K, 1)`` the teacher's labels.
        n: samples each student picks.

    Returns:
        ``(loss_1 (n, 1), loss_2 (n, 1), rows_1 (n,), rows_2 (n,))``: student 1's loss on the rows
        student 2 picked (``rows_1``) and student 2's on student 1's picks (``rows_2``).
    """
    ind_1 = torch.argsort(F.mse_loss(pred_1, target, reduction="none").view(-1).detach(), stable=True)[:n]
    ind_2 = torch.argsort(F.mse_loss(pred_2, target, reduction="none").view(-1).detach(), stable=True)[:n]
    loss_1 = F.mse_loss(pred_1[ind_2], target[ind_2], reduction="none")
    loss_2 = F.mse_loss(pred_2[ind_1], target[ind_1], reduction="none")
    return loss_1, loss_2, ind_2, ind_1


def _meta_loss(weight: Tensor, loss: Tensor, fixed: bool) -> Tensor:
    """``torch.sum(weight * loss) / n`` (``ICT.py:108-109``); ``fixed``: ``loss`` flattened first."""
    return torch.sum(weight * (loss.view(-1) if fixed else loss)) / weight.shape[0]


def finetune_higher(proxies: Sequence[nn.Module], x_start: Tensor, x_val: Tensor, y_val: Tensor, noise: Tensor,
                    settings: FineTuning) -> tuple[Tensor, Tensor]:
    """Fine-tune three proxies along the path from ``x_start``, in place (``ICT.py:59-233``).

    Args:
        proxies: three modules mapping ``(B, D)`` to ``(B, 1)`` (and ``(D,)`` to ``(1,)``).
        x_start: ``(D,)`` the path's first design.
        x_val: ``(N, D)`` rows of the meta objective.
        y_val: ``(N,)`` their scores.
        noise: ``(T, K, 1)`` (released) or ``(T, K, D)`` standard normal draws.
        settings: the fine-tuning settings.

    Returns:
        ``(T, 3, 2, n)`` the weights of every step's, round's and student's selected samples, and
        ``(D,)`` the path design after the last step.
    """
    n, fixed = settings.select, settings.mode == "fixed"
    optimizers = [torch.optim.Adam(p.parameters(), lr=settings.alpha) for p in proxies]
    candidate = x_start.detach().clone().requires_grad_(True)
    candidate_opt = torch.optim.Adam([candidate], lr=settings.x_lr)
    label_val = y_val.reshape(-1, 1)
    history = []
    for t in range(settings.steps):
        with torch.enable_grad():
            loss = -1.0 / 3.0 * (proxies[0](candidate) + proxies[1](candidate) + proxies[2](candidate))
            (candidate.grad,) = torch.autograd.grad(loss.sum(), candidate)
        candidate_opt.step()
        x_train = candidate.detach() + settings.noise * noise[t].to(candidate)  # (K, D)
        with torch.no_grad():
            labels = [p(x_train) for p in proxies]  # (K, 1) each
        rounds = []
        for teacher, (a, b) in ROUNDS:
            y_label = labels[teacher]
            weights: list[Tensor] = []
            with torch.enable_grad(), higher.innerloop_ctx(proxies[a], optimizers[a]) as (model_a, opt_a), \
                    higher.innerloop_ctx(proxies[b], optimizers[b]) as (model_b, opt_b):
                l_a, l_b, rows_a, rows_b = loss_coteaching(model_a(x_train), model_b(x_train), y_label, n)
                for model, opt, loss in ((model_a, opt_a, l_a), (model_b, opt_b, l_b)):
                    weight = torch.ones(n, dtype=x_train.dtype, device=x_train.device, requires_grad=True)
                    if settings.reweighting:
                        opt.step(_meta_loss(weight, loss, fixed))
                        loss_v = F.mse_loss(model(x_val), label_val)
                        g = torch.autograd.grad(loss_v, weight)[0]
                        g = torch.clamp(F.normalize(g, p=1, dim=0), min=-settings.clip, max=settings.clip)
                        weight = torch.clamp(weight - settings.beta * g, min=0, max=2)
                    weights.append(weight.detach())
            for proxy, opt, weight, rows in ((proxies[a], optimizers[a], weights[0], rows_a),
                                             (proxies[b], optimizers[b], weights[1], rows_b)):
                with torch.enable_grad():
                    out = proxy(x_train)
                    if fixed:
                        loss = torch.sum(weight * F.mse_loss(out[rows], y_label[rows], reduction="none").view(-1)) / n
                    else:  # (n,) * (K, 1): every neighbour, ICT.py:132-133
                        loss = torch.sum(weight * F.mse_loss(out, y_label, reduction="none")) / n
                    opt.zero_grad()
                    loss.backward()
                opt.step()
            rounds.append(torch.stack(weights))
        history.append(torch.stack(rounds))
    every = torch.stack(history) if history else x_start.new_ones((0, len(ROUNDS), 2, n))
    return every, candidate.detach()
