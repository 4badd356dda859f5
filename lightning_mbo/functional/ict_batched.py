"""ICT's fine-tuning, batched: many proxy triples fine-tuned at once through ``torch.func``.

The equations are :mod:`lightning_mbo.functional.ict` (Yuan, Chen, Liu, Neiswanger, Liu,
"Importance-aware Co-teaching for Offline Model-based Optimization", NeurIPS 2023; released code
``ICT.py:59-233``). Here ``G`` independent triples (one per replicate) follow their own paths at
once: every co-teaching round treats its ``2G`` students as one stacked batch (``torch.func.vmap``).
The virtual Adam step and its weight gradient are written out instead of run through ``higher``:

* ``θ'(w) = AdamStep_higher(θ, ∇_θ L_w(θ), m, v)`` (:func:`lightning_mbo.functional.adam.adam_step`
  in ``higher``'s form, with the real optimizer's ``m``, ``v`` and step count);
* ``∂ L_val(θ'(w)) / ∂w = (∂θ'/∂w)ᵀ ∇_θ' L_val(θ')``: the gradient of the MSE over the static set at
  ``θ'`` is accumulated over chunks of rows (memory stays bounded for any ``N``), then pulled back to
  ``w`` by differentiating ``<θ'(w), ∇_θ' L_val>`` (second order only through the ``n`` selected
  samples);
* the real step is :func:`~lightning_mbo.functional.adam.adam_step` in ``torch.optim.Adam``'s form.

The ``higher`` reference with the released code's structure is
:func:`lightning_mbo.functional.ict_higher.finetune_higher`; the tests prove the two give the
same weights, proxies and path. This module imports no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from torch.func import grad, vmap

from lightning_mbo.functional.adam import adam_step
from lightning_mbo.functional.ict import (
    ROUNDS,
    FineTuning,
    Mode,
    coteaching_select,
    meta_weight_update,
    neighbourhood,
    real_step_loss,
    weighted_loss,
)
from lightning_mbo.functional.tri_mentoring import predict_stacked
from lightning_mbo.nn import member_forward

__all__ = ["FineTuned", "coteach_round", "finetune_batched", "meta_weight_grad", "val_mse_grad"]

Params = dict[str, Tensor]

#: Static-set rows per chunk of the validation-MSE gradient (an engineering knob: results agree
#: to rounding for any value).
VAL_CHUNK = 8192


@dataclass(frozen=True)
class FineTuned:
    """What :func:`finetune_batched` hands back.

    Attributes:
        params: the fine-tuned proxies, StackedMLP tensors ``(G, 3, ...)``.
        x: ``(G, D)`` the path design after the last step.
        weights: ``(T, 3, G, 2, n)`` the weights of every step's, round's and student's selected
            samples (all 1 without reweighting).
    """

    params: Params
    x: Tensor
    weights: Tensor


def _pred(params: Params, x: Tensor, activation: str) -> Tensor:
    """One member's scalar prediction: ``(B, D)`` -> ``(B,)``."""
    return member_forward(params, x, activation)[..., 0]


def _sse(params: Params, x: Tensor, y: Tensor, activation: str) -> Tensor:
    return ((_pred(params, x, activation) - y) ** 2).sum()


def val_mse_grad(params: Params, x: Tensor, y: Tensor, activation: str = "relu", chunk: int = VAL_CHUNK) -> Params:
    """``∇_θ L_val`` with ``L_val(θ) = 1/N Σ_i (f(x_i; θ) - y_i)²`` for ``S`` stacked members.

    Args:
        params: ``(S, ...)`` member tensors.
        x: ``(N, D)`` the rows of the meta objective (every member sees all of them).
        y: ``(N,)`` their scores.
        activation: hidden activation.
        chunk: rows per pass.

    Returns:
        ``(S, ...)`` gradients.
    """
    per = vmap(grad(partial(_sse, activation=activation)), in_dims=(0, None, None))
    total: Params | None = None
    for start in range(0, len(y), chunk):
        g = per(params, x[start:start + chunk], y[start:start + chunk])
        total = g if total is None else {n: total[n] + g[n] for n in g}
    assert total is not None, "the meta objective needs at least one row"
    return {n: t / len(y) for n, t in total.items()}


def _virtual(w: Tensor, theta: Params, m: Params, v: Params, step: Tensor, x_sel: Tensor, t_sel: Tensor, *,
             mode: Mode, alpha: float, activation: str) -> Params:
    """One member's ``θ'(w)``: a differentiable Adam step (``higher``'s form) on ``L_w`` of the selected samples."""
    def loss(th: Params) -> Tensor:
        return weighted_loss(w, (_pred(th, x_sel, activation) - t_sel) ** 2, mode)

    g = grad(loss)(theta)
    return {n: adam_step(theta[n], g[n], m[n], v[n], step, alpha, form="higher")[0] for n in theta}


def _pull_back(w: Tensor, theta: Params, m: Params, v: Params, step: Tensor, x_sel: Tensor, t_sel: Tensor,
               g_val: Params, *, mode: Mode, alpha: float, activation: str) -> Tensor:
    """``∂ <θ'(w), g_val> / ∂w``: the weights' gradient when ``g_val = ∇L_val(θ'(w))`` (held fixed)."""
    def dot(w_: Tensor) -> Tensor:
        new = _virtual(w_, theta, m, v, step, x_sel, t_sel, mode=mode, alpha=alpha, activation=activation)
        return torch.stack([(new[n] * g_val[n]).sum() for n in new]).sum()

    return grad(dot)(w)


def meta_weight_grad(theta: Params, m: Params, v: Params, step: Tensor, x_sel: Tensor, t_sel: Tensor,
                     x_val: Tensor, y_val: Tensor, *, mode: Mode, alpha: float, activation: str = "relu",
                     chunk: int = VAL_CHUNK) -> Tensor:
    """``g = ∂ L_val(θ'(w)) / ∂w`` at ``w = 1`` for ``S`` stacked students (``ICT.py:104-114``).

    Args:
        theta: ``(S, ...)`` the students' tensors.
        m: ``(S, ...)`` their real Adam optimizers' first moments.
        v: ``(S, ...)`` ... and second moments.
        step: ``(S,)`` the virtual step's number (the real optimizer's count + 1).
        x_sel: ``(S, n, D)`` each student's selected samples.
        t_sel: ``(S, n)`` their pseudo-labels.
        x_val: ``(N, D)`` rows of the meta objective.
        y_val: ``(N,)`` their scores.
        mode: ``released`` or ``fixed`` weighted loss (:func:`~lightning_mbo.functional.ict.weighted_loss`).
        alpha: the virtual step's learning rate α.
        activation: hidden activation.
        chunk: rows per pass of the validation gradient.

    Returns:
        ``(S, n)``.
    """
    w = torch.ones_like(t_sel)
    virtual = vmap(partial(_virtual, mode=mode, alpha=alpha, activation=activation))(w, theta, m, v, step, x_sel,
                                                                                     t_sel)
    g_val = val_mse_grad(virtual, x_val, y_val, activation, chunk)
    return vmap(partial(_pull_back, mode=mode, alpha=alpha, activation=activation))(w, theta, m, v, step, x_sel,
                                                                                    t_sel, g_val)


def _real_loss(theta: Params, w: Tensor, x_nb: Tensor, target: Tensor, x_sel: Tensor, t_sel: Tensor, *,
               mode: Mode, activation: str) -> Tensor:
    every = (_pred(theta, x_nb, activation) - target) ** 2
    selected = (_pred(theta, x_sel, activation) - t_sel) ** 2
    return real_step_loss(w, every, selected, mode)


def coteach_round(theta: Params, m: Params, v: Params, steps: tuple[int, int], x_nb: Tensor, target: Tensor,
                  x_val: Tensor, y_val: Tensor, settings: FineTuning, activation: str = "relu",
                  chunk: int = VAL_CHUNK) -> tuple[Params, Params, Params, Tensor]:
    """One co-teaching round of ``G`` pairs of students on their teachers' pseudo-labels (``ICT.py:98-142``).

    Selection (:func:`~lightning_mbo.functional.ict.coteaching_select`), the meta-learned
    weights (:func:`meta_weight_grad`, :func:`~lightning_mbo.functional.ict.meta_weight_update`;
    skipped without reweighting) and one real Adam step of each student.

    Args:
        theta: ``(G, 2, ...)`` the two students of every group.
        m: ``(G, 2, ...)`` their Adam first moments.
        v: ``(G, 2, ...)`` ... second moments.
        steps: the two students' step numbers after this round's real step.
        x_nb: ``(G, K, D)`` each group's neighbours.
        target: ``(G, K)`` the teacher's pseudo-labels.
        x_val: ``(N, D)`` rows of the meta objective.
        y_val: ``(N,)`` their scores.
        settings: the fine-tuning settings.
        activation: hidden activation.
        chunk: rows per pass of the validation gradient.

    Returns:
        ``(θ, m, v)`` after the step, each ``(G, 2, ...)``, and the weights ``(G, 2, n)``.
    """
    g, k, d = x_nb.shape
    flat = {n: t.reshape(2 * g, *t.shape[2:]) for n, t in theta.items()}
    xs, ts = x_nb.repeat_interleave(2, 0), target.repeat_interleave(2, 0)  # row 2i + s: group i, student s
    step = torch.tensor(steps, dtype=x_nb.dtype, device=x_nb.device).repeat(g)
    with torch.no_grad():
        losses = (vmap(partial(_pred, activation=activation))(flat, xs) - ts) ** 2
    sel = coteaching_select(losses.view(g, 2, k), settings.select).reshape(2 * g, -1)
    x_sel = torch.gather(xs, 1, sel.unsqueeze(-1).expand(-1, -1, d))
    t_sel = torch.gather(ts, 1, sel)
    mf = {n: t.reshape(flat[n].shape) for n, t in m.items()}
    vf = {n: t.reshape(flat[n].shape) for n, t in v.items()}
    w = torch.ones_like(t_sel)
    if settings.reweighting:
        g_w = meta_weight_grad(flat, mf, vf, step, x_sel, t_sel, x_val, y_val, mode=settings.mode,
                               alpha=settings.alpha, activation=activation, chunk=chunk)
        w = meta_weight_update(w, g_w, settings.beta, settings.clip)
    grads = vmap(grad(partial(_real_loss, mode=settings.mode, activation=activation)))(flat, w, xs, ts, x_sel, t_sel)
    out: tuple[Params, Params, Params] = ({}, {}, {})
    for n, t in flat.items():
        per_member = step.view(-1, *([1] * (t.dim() - 1)))
        for store, new in zip(out, adam_step(t, grads[n], mf[n], vf[n], per_member, settings.alpha), strict=True):
            store[n] = new.reshape(theta[n].shape)
    return (*out, w.reshape(g, 2, -1))


def finetune_batched(params: Params, x_start: Tensor, x_val: Tensor, y_val: Tensor, noise: Tensor,
                     settings: FineTuning, activation: str = "relu", chunk: int = VAL_CHUNK) -> FineTuned:
    """ICT's fine-tuning of ``G`` proxy triples along their own paths (``ICT.py:59-233``).

    Each step: one Adam(``x_lr``) step of every path design on the mean of its triple, the
    neighbours ``x + δ ε`` labelled by the triple, then the three rounds of
    :data:`~lightning_mbo.functional.ict.ROUNDS` (:func:`coteach_round`), each proxy with
    its own Adam(α) optimizer (state kept over the whole path). No input is modified.

    Args:
        params: StackedMLP tensors ``(G, 3, ...)``: the pre-trained triples.
        x_start: ``(G, D)`` the path's first design (ICT: the best training design).
        x_val: ``(N, D)`` rows of the meta objective (ICT: the whole static set).
        y_val: ``(N,)`` their scores.
        noise: ``(G, T, K, 1)`` (released) or ``(G, T, K, D)`` standard normal draws ``ε``.
        settings: the fine-tuning settings.
        activation: hidden activation.
        chunk: rows per pass of the validation gradient.

    Returns:
        :class:`FineTuned`.
    """
    g = x_start.shape[0]
    if noise.shape[:3] != (g, settings.steps, settings.neighbours):
        raise ValueError(f"noise must be ({g}, {settings.steps}, {settings.neighbours}, 1 or D), got "
                         f"{tuple(noise.shape)}")
    theta = {n: t.detach().clone() for n, t in params.items()}
    m = {n: torch.zeros_like(t) for n, t in theta.items()}
    v = {n: torch.zeros_like(t) for n, t in theta.items()}
    counts = [0, 0, 0]
    x = x_start.detach().clone().requires_grad_(True)
    x_opt = torch.optim.Adam([x], lr=settings.x_lr)
    history = []
    for t in range(settings.steps):
        with torch.enable_grad():
            score = predict_stacked(theta, x.unsqueeze(1), activation)[..., 0].mean(-1)  # (G,)
            (x.grad,) = torch.autograd.grad(-score.sum(), x)
        x_opt.step()
        with torch.no_grad():
            x_nb = neighbourhood(x.detach(), noise[:, t], settings.noise)  # (G, K, D)
            labels = predict_stacked(theta, x_nb, activation)  # (G, 3, K), before any update
        weights = []
        for teacher, (a, b) in ROUNDS:
            pair = [a, b]
            new = coteach_round({n: p[:, pair] for n, p in theta.items()}, {n: p[:, pair] for n, p in m.items()},
                                {n: p[:, pair] for n, p in v.items()}, (counts[a] + 1, counts[b] + 1), x_nb,
                                labels[:, teacher], x_val, y_val, settings, activation, chunk)
            for store, fresh in zip((theta, m, v), new[:3], strict=True):
                for n in store:
                    store[n][:, pair] = fresh[n]
            counts[a] += 1
            counts[b] += 1
            weights.append(new[3])
        history.append(torch.stack(weights))
    empty = x_start.new_ones((0, len(ROUNDS), g, 2, settings.select))
    return FineTuned(theta, x.detach(), torch.stack(history) if history else empty)
