"""Tri-mentoring's reference backend: one candidate and one proxy at a time, through ``higher``.

The one-candidate-one-proxy reference: one mentoring step of one proxy for one candidate (paper
Algorithm 1, lines 8-11), the bi-level soft-label step (paper Eqs. 8-9) differentiated through
one inner SGD step by ``higher`` as in the authors' released code of Chen, Beckham, Liu, Liu, Pal,
"Parallel-mentoring for Offline Model-based Optimization", NeurIPS 2023 (arXiv 2309.11592).
Notation as in :mod:`lightning_mbo.functional.tri_mentoring`. The batched path there
(:func:`lightning_mbo.functional.tri_mentoring.mentor_batched`) is proven equal to this one by the
tests (``tests/functional/test_tri_mentoring.py``).

This module imports no Lightning.
"""

from __future__ import annotations

import higher
import torch
from torch import Tensor, nn

from lightning_mbo.functional.tri_mentoring import pair_indices, pair_loss

__all__ = [
    "mentor_proxy_higher",
    "soft_label_grad_higher",
]


def _module_pred(module: nn.Module, x: Tensor) -> Tensor:
    """Run a proxy mapping ``(B, D)`` to ``(B,)`` or ``(B, 1)``; return ``(B,)``."""
    out = module(x)
    if out.shape not in ((x.shape[0],), (x.shape[0], 1)):
        raise ValueError(f"proxy must map (B, D) to (B,) or (B, 1); got {tuple(out.shape)}")
    return out.reshape(x.shape[0])


def soft_label_grad_higher(
    proxy: nn.Module,
    x_nb: Tensor,
    soft: Tensor,
    mask: Tensor,
    x_data: Tensor,
    y_data: Tensor,
    beta: float = 1e-3,
) -> Tensor:
    """Label gradient of the bi-level problem, differentiated through one inner step by ``higher``.

    Inner (paper Eq. 8): ``θ'(s) = θ - β ∇_θ L_pair(θ; s)`` (one differentiable SGD step);
    outer objective (paper Eq. 9): ``L_data(θ'(s)) = mean_n (f(x_n; θ') - y_n)²`` over all rows.
    The proxy itself is not changed (``copy_initial_weights=True``).

    Args:
        proxy: module mapping ``(B, D)`` to ``(B,)`` or ``(B, 1)``.
        x_nb: ``(K, D)`` neighbourhood points.
        soft: ``(n_pairs,)`` labels ``s`` at which to differentiate (only masked entries used).
        mask: ``(n_pairs,)`` bool, the pairs ``P_m``; must not be empty.
        x_data: ``(N, D)`` static training inputs.
        y_data: ``(N,)`` static training scores.
        beta: inner learning rate ``β``.

    Returns:
        ``(n_pairs,)`` ``∂L_data(θ'(s))/∂s_k`` on the masked pairs, 0 elsewhere.
    """
    i, j = pair_indices(x_nb.shape[0], x_nb.device)
    y = y_data.reshape(-1)
    with torch.enable_grad():
        s = soft[mask].detach().clone().requires_grad_(True)
        opt = torch.optim.SGD(proxy.parameters(), lr=beta)
        with higher.innerloop_ctx(proxy, opt, copy_initial_weights=True) as (fmodel, diffopt):
            pred = _module_pred(fmodel, x_nb)
            diff = (pred[i] - pred[j])[mask]
            diffopt.step(pair_loss(diff, s, torch.ones_like(s, dtype=torch.bool)))
            l_data = ((_module_pred(fmodel, x_data) - y) ** 2).mean()
            (g_s,) = torch.autograd.grad(l_data, s)
    out = torch.zeros_like(soft, dtype=g_s.dtype)
    out[mask] = g_s
    return out


def mentor_proxy_higher(
    proxy: nn.Module,
    x_nb: Tensor,
    consensus: Tensor,
    mask: Tensor,
    x_data: Tensor,
    y_data: Tensor,
    beta: float = 1e-3,
    lambda_s: float = 0.1,
    soft_labels: bool = True,
) -> Tensor:
    """One mentoring step of ONE proxy for ONE candidate, in place (reference backend).

    Paper Algorithm 1, lines 8-11:

    1. ``s ← y^V`` on ``P_m`` (the pairs where ``mask`` is True);
    2. ``s ← clip(s - λ_s ∂L_data(θ'(s))/∂s, 0, 1)`` with ``θ'(s) = θ - β ∇_θ L_pair(θ; s)``
       (Eqs. 8-9, via :func:`soft_label_grad_higher`); skipped when ``soft_labels=False``
       (the "w/o soft-labelling" ablation: mentor with the hard consensus labels);
    3. mentor: ``θ ← θ - β ∇_θ L_pair(θ; s)``, one plain SGD step on the proxy's own
       parameters (in place, gradients computed even under ``torch.no_grad``; ``.grad`` is not
       touched).

    With an empty ``mask`` the proxy is left alone.

    Args:
        proxy: module mapping ``(B, D)`` to ``(B,)`` or ``(B, 1)``; updated in place.
        x_nb: ``(K, D)`` neighbourhood points.
        consensus: ``(n_pairs,)`` consensus labels ``y^V`` (0/1).
        mask: ``(n_pairs,)`` bool, True on ``P_m``.
        x_data: ``(N, D)`` static training inputs (all rows enter ``L_data``).
        y_data: ``(N,)`` static training scores.
        beta: inner and mentoring learning rate ``β``.
        lambda_s: soft-label learning rate ``λ_s``.
        soft_labels: refine the labels by the bi-level step (default) or not (ablation).

    Returns:
        ``(n_pairs,)`` the labels used: refined soft labels on ``P_m``, the consensus elsewhere
        (all consensus where nothing was refined).
    """
    i, j = pair_indices(x_nb.shape[0], x_nb.device)
    s_full = consensus.to(x_nb.dtype).clone()
    if not bool(mask.any()):
        return s_full
    if soft_labels:
        g_s = soft_label_grad_higher(proxy, x_nb, s_full, mask, x_data, y_data, beta=beta)
        s_full[mask] = (s_full[mask] - lambda_s * g_s[mask]).clamp(0.0, 1.0)
    params = [p for p in proxy.parameters() if p.requires_grad]
    with torch.enable_grad():
        pred = _module_pred(proxy, x_nb)
        diff = (pred[i] - pred[j])[mask]
        loss = pair_loss(diff, s_full[mask], torch.ones_like(diff, dtype=torch.bool))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.sub_(beta * g)
    return s_full
