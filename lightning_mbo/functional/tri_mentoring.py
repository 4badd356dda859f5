"""Tri-mentoring (parallel-mentoring) as pure tensor functions: the equations and the batched step.

Chen, Beckham, Liu, Liu, Pal, "Parallel-mentoring for Offline Model-based Optimization",
NeurIPS 2023 (arXiv 2309.11592): voting-based pairwise supervision (paper Section 3.1, Eq. 5)
and adaptive soft-labelling (paper Section 3.2, Eqs. 8-9), for ``P`` proxies (three in the paper).

Notation used throughout:

* ``K`` neighbourhood points ``x_1..x_K`` around the current design, ``n_pairs = K(K-1)/2``
  pairs ``k = (i, j)`` with ``i < j`` in row-major order.
* ``f_m`` proxy ``m`` with parameters ``θ_m``; ``d_k(θ) = f(x_i; θ) - f(x_j; θ)``.
* ``P_m`` the pairs on which proxy ``m`` disagrees with the consensus.
* ``L_pair(θ; s) = 1/|P_m| Σ_{k∈P_m} BCE(σ(d_k(θ)), s_k)`` with
  ``BCE(p, s) = -(s log(p + 1e-9) + (1 - s) log(1 - p + 1e-9))``.
* ``L_data(θ) = 1/N Σ_n (f(x_n; θ) - y_n)²`` over the whole static training set.

One mentoring step of proxy ``m`` (paper Algorithm 1, lines 8-11):

1. ``s ← y^V`` on ``P_m`` (hard consensus labels);
2. inner, paper Eq. 8: ``θ'(s) = θ - β ∇_θ L_pair(θ; s)``;
3. outer, paper Eq. 9: ``s ← clip(s - λ_s ∂L_data(θ'(s))/∂s, 0, 1)``;
4. mentor: ``θ ← θ - β ∇_θ L_pair(θ; s)``.

Here: these equations and :func:`mentor_batched`, all candidates and proxies at once by
``torch.func`` with the label gradient in closed form; its outer gradient product comes from
:mod:`lightning_mbo.functional.outer_dot`, and the ``higher`` reference backend with the same
semantics is :mod:`lightning_mbo.functional.tri_mentoring_higher`. This module imports no Lightning.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad, vmap

from lightning_mbo.functional.outer_dot import OuterMSE, outer_dot
from lightning_mbo.nn import member_forward

__all__ = [
    "EPS",
    "disagreement_mask",
    "majority_vote",
    "mentor_batched",
    "neighbourhood",
    "pair_indices",
    "pair_loss",
    "pairwise_labels",
    "predict_stacked",
    "soft_label_grad_batched",
    "summed_rank_labels",
]

EPS = 1e-9
"""The constant added inside both logarithms of the pair loss (as in the released code)."""


# ----------------------------------------------------------------------------------------------
# Voting-based pairwise supervision (paper Section 3.1, Eq. 5)
# ----------------------------------------------------------------------------------------------


def neighbourhood(
    x: Tensor, k: int, delta: float, generator: torch.Generator | None = None, noise: Tensor | None = None
) -> Tensor:
    """Sample ``K`` points around each design: ``S(x) = {x + δ ε_a}``, ``ε_a ~ N(0, I)``.

    Paper Section 3.1: ``S(x_t) = {x^n_1, ..., x^n_K} ~ N(x_t, δ²)``.

    Args:
        x: designs, ``(..., D)``.
        k: number of neighbourhood points ``K``.
        delta: standard deviation ``δ`` of the Gaussian perturbation.
        generator: optional random generator (on ``x``'s device).
        noise: ``(..., K, D)`` standard normal draws ``ε`` to use instead of drawing them (callers
            that must draw the same noise however candidates are split over processes).

    Returns:
        ``(..., K, D)`` neighbourhood points, in ``x``'s dtype and device.
    """
    if noise is None:
        noise = torch.randn((*x.shape[:-1], k, x.shape[-1]), generator=generator, dtype=x.dtype, device=x.device)
    elif noise.shape != (*x.shape[:-1], k, x.shape[-1]):
        raise ValueError(f"noise must have shape {(*x.shape[:-1], k, x.shape[-1])}, got {tuple(noise.shape)}")
    return x.unsqueeze(-2) + delta * noise.to(x)


def pair_indices(k: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Return the ``K(K-1)/2`` index pairs ``(i, j)``, ``i < j``, in row-major order.

    Order: ``(0, 1), (0, 2), ..., (0, K-1), (1, 2), ..., (K-2, K-1)``.

    Args:
        k: number of points ``K``.
        device: device of the returned tensors.

    Returns:
        ``(i, j)``, two long tensors of shape ``(n_pairs,)``.
    """
    idx = torch.triu_indices(k, k, offset=1, device=device)
    return idx[0], idx[1]


def pairwise_labels(pred: Tensor) -> Tensor:
    """Pairwise comparison labels ``y^m_ij = 1(f_m(x_i) > f_m(x_j))`` (paper Section 3.1).

    Args:
        pred: ``(..., P, K)``, the predictions of ``P`` proxies at ``K`` points (any leading
            dims; only the last one is paired).

    Returns:
        ``(..., P, n_pairs)`` float labels in ``pred``'s dtype: 1.0 where ``pred[..., i] >
        pred[..., j]``, else 0.0 (ties give 0.0), pairs ordered as :func:`pair_indices`.
    """
    i, j = pair_indices(pred.shape[-1], pred.device)
    return (pred[..., i] > pred[..., j]).to(pred.dtype)


def majority_vote(labels: Tensor) -> Tensor:
    """Consensus labels by element-wise majority vote (paper Eq. 5).

    ``y^V_ij = 1`` iff more than half of the ``P`` proxies say ``y^m_ij = 1``, i.e.
    ``Σ_m y^m_ij > P / 2``. A tie, possible only for even ``P``, gives 0 (no strict majority
    for ``x_i`` ranking above ``x_j``).

    Args:
        labels: ``(..., P, n_pairs)`` 0/1 labels of each proxy.

    Returns:
        ``(..., n_pairs)`` float consensus labels.
    """
    p = labels.shape[-2]
    return (2 * labels.sum(-2) > p).to(labels.dtype)


def summed_rank_labels(pred: Tensor) -> Tensor:
    """Consensus of the "w/o voting" ablation: rank by the summed prediction.

    ``y^V_ij = 1(Σ_m f_m(x_i) > Σ_m f_m(x_j))``.

    Args:
        pred: ``(..., P, K)`` predictions of ``P`` proxies at ``K`` points.

    Returns:
        ``(..., n_pairs)`` float labels.
    """
    return pairwise_labels(pred.sum(-2))


def disagreement_mask(labels: Tensor, consensus: Tensor) -> Tensor:
    """Which pairs each proxy is mentored on: ``P_m = {k : y^m_k ≠ y^V_k}`` (paper Section 3.1).

    Args:
        labels: ``(..., P, n_pairs)`` labels of each proxy.
        consensus: ``(..., n_pairs)`` consensus labels.

    Returns:
        ``(..., P, n_pairs)`` bool, True where proxy ``p``'s label differs from the consensus.
    """
    return labels != consensus.unsqueeze(-2)


def pair_loss(diff: Tensor, soft: Tensor, mask: Tensor) -> Tensor:
    """Masked pairwise binary cross-entropy (paper Eq. 6).

    ``p_k = σ(d_k)``, ``L = 1/|P| Σ_{k∈P} -(s_k log(p_k + 1e-9) + (1 - s_k) log(1 - p_k + 1e-9))``
    with ``P`` the set where ``mask`` is True.

    Args:
        diff: ``(..., n)``, ``d_k = f(x_i) - f(x_j)``.
        soft: ``(..., n)`` (soft) labels in ``[0, 1]``, broadcastable to ``diff``.
        mask: ``(..., n)`` bool, broadcastable to ``diff``.

    Returns:
        ``(...)`` the mean loss over the masked pairs; exactly 0 (with zero gradient, never NaN)
        where the mask is empty.
    """
    p = torch.sigmoid(diff)
    bce = -(soft * torch.log(p + EPS) + (1 - soft) * torch.log(1 - p + EPS))
    bce, mask = torch.broadcast_tensors(bce, mask)
    total = torch.where(mask, bce, torch.zeros_like(bce)).sum(-1)
    count = mask.sum(-1).clamp(min=1).to(total.dtype)
    return total / count


# ----------------------------------------------------------------------------------------------
# Batched backend: torch.func over candidates x proxies (outer product: functional.outer_dot)
# ----------------------------------------------------------------------------------------------


def _pred(params: dict[str, Tensor], x: Tensor, activation: str) -> Tensor:
    """One member's scalar prediction: ``(B, D)`` -> ``(B,)``."""
    return member_forward(params, x, activation)[..., 0]


def _flatten(params: dict[str, Tensor], lead: int) -> dict[str, Tensor]:
    """Merge the first ``lead`` dims of every tensor into one member dim."""
    return {n: t.reshape(-1, *t.shape[lead:]) for n, t in params.items()}


def predict_stacked(params: dict[str, Tensor], x: Tensor, activation: str = "relu") -> Tensor:
    """Predictions of every candidate's own proxies at that candidate's points.

    ``out[c, p, b] = f(x[c, b]; θ_{c,p})``.

    Args:
        params: StackedMLP tensors with leading dims ``(C, P)`` (e.g. ``layers.0.weight``
            ``(C, P, D, H)``, ``layers.0.bias`` ``(C, P, 1, H)``).
        x: ``(C, B, D)``.
        activation: hidden activation.

    Returns:
        ``(C, P, B)``; differentiable with respect to ``x`` and ``params``.
    """
    per_proxy = vmap(_pred, in_dims=(0, None, None))
    return vmap(per_proxy, in_dims=(0, 0, None))(params, x, activation)


def _pair_objective(
    params: dict[str, Tensor], x_nb: Tensor, soft: Tensor, mask: Tensor, activation: str
) -> Tensor:
    """``L_pair(θ; s)`` of one member: x_nb ``(K, D)``, soft/mask ``(n_pairs,)`` -> scalar."""
    i, j = pair_indices(x_nb.shape[-2], x_nb.device)
    pred = _pred(params, x_nb, activation)
    return pair_loss(pred[i] - pred[j], soft, mask)


# ∇_θ L_pair for M stacked members: params (M, ...), x_nb (M, K, D), soft/mask (M, n_pairs).
_pair_grad = vmap(grad(_pair_objective), in_dims=(0, 0, 0, 0, None))


def _soft_label_grad_flat(
    params: dict[str, Tensor], x_nb: Tensor, soft: Tensor, mask: Tensor, outer: OuterMSE, activation: str, beta: float
) -> Tensor:
    """:func:`soft_label_grad_batched` on ``M`` flat members.

    Shapes: params ``(M, ...)``, x_nb ``(M, K, D)``, soft and mask ``(M, n_pairs)``; returns
    ``(M, n_pairs)``.
    """
    g_pair = _pair_grad(params, x_nb, soft, mask, activation)
    inner = {n: params[n] - beta * g_pair[n] for n in params}  # θ' = θ - β ∇_θ L_pair(θ; s)
    del g_pair
    # u_a = <∇_θ' L_data(θ'), ∇_θ f(x_a; θ)> for all K points (lightning_mbo.functional.outer_dot)
    u, pred = outer_dot(inner, params, x_nb, outer, activation)
    i, j = pair_indices(x_nb.shape[-2], x_nb.device)
    p = torch.sigmoid(pred[:, i] - pred[:, j])
    # c_k = -∂²BCE/∂d∂s = p(1-p)(1/(p+ε) + 1/(1-p+ε)); exactly 1 for ε = 0.
    c = p * (1 - p) * (1 / (p + EPS) + 1 / (1 - p + EPS))
    count = mask.sum(-1, keepdim=True).clamp(min=1).to(pred.dtype)
    ds = (beta / count) * c * (u[:, i] - u[:, j])
    return torch.where(mask, ds, torch.zeros_like(ds))


def _per_copy(x_nb: Tensor, mask: Tensor) -> Tensor:
    """Each candidate's points ``(C, K, D)`` repeated for its ``P`` proxy copies: ``(C·P, K, D)``."""
    c, p = mask.shape[:2]
    return x_nb.unsqueeze(1).expand(c, p, *x_nb.shape[-2:]).reshape(c * p, *x_nb.shape[-2:])


def soft_label_grad_batched(
    params: dict[str, Tensor], x_nb: Tensor, soft: Tensor, mask: Tensor, outer: OuterMSE, *,
    activation: str = "relu", beta: float = 1e-3,
) -> Tensor:
    """Label gradient ``∂L_data(θ'(s))/∂s`` for all candidates and proxies, in closed form.

    With ``θ'(s) = θ - β ∇_θ L_pair(θ; s)`` (paper Eq. 8) and ``g = ∇_θ' L_data(θ')``:

    ``∂L_data/∂s_k = (β / |P_m|) c_k <g, ∇_θ d_k(θ)>``,
    ``c_k = p_k (1 - p_k) (1/(p_k + ε) + 1/(1 - p_k + ε))``, ``p_k = σ(d_k(θ))``,

    the chain rule through ``θ'(s)`` (``c_k = 1`` in its ``ε → 0`` limit); keeping ``c_k`` makes
    it the exact derivative of the loss with ``ε = 1e-9``, so it matches autograd through ``θ'(s)``
    (``tri_mentoring_higher.soft_label_grad_higher``) to rounding. The outer gradient product
    ``u_a = <g, ∇_θ f(x_a)>`` comes from :func:`lightning_mbo.functional.outer_dot.outer_dot`, for all
    ``K`` points without forming ``g`` (one forward and one backward pass over the ``N`` data rows
    per member, ``data_chunk`` rows at a time), then differenced per pair.

    Args:
        params: StackedMLP tensors with leading dims ``(C, P)``.
        x_nb: ``(C, K, D)`` neighbourhood points of each candidate.
        soft: ``(C, P, n_pairs)`` labels ``s`` at which to differentiate.
        mask: ``(C, P, n_pairs)`` bool, the pairs ``P_m`` of each proxy copy.
        outer: the static training set of ``L_data`` and how its pass is computed.
        activation: hidden activation of the proxies.
        beta: inner learning rate ``β``.

    Returns:
        ``(C, P, n_pairs)``; 0 off the mask (and for proxies with an empty mask).
    """
    c, p, n_pairs = mask.shape
    flat = _soft_label_grad_flat(_flatten(params, 2), _per_copy(x_nb, mask), soft.reshape(c * p, n_pairs),
                                 mask.reshape(c * p, n_pairs), outer, activation, beta)
    return flat.reshape(c, p, n_pairs)


def mentor_batched(
    params: dict[str, Tensor], x_nb: Tensor, consensus: Tensor, mask: Tensor, outer: OuterMSE, *,
    activation: str = "relu", beta: float = 1e-3, lambda_s: float = 0.1, soft_labels: bool = True,
) -> tuple[dict[str, Tensor], Tensor]:
    """One mentoring step of every proxy copy of every candidate at once (batched backend).

    Same semantics as calling :func:`lightning_mbo.functional.tri_mentoring_higher.mentor_proxy_higher`
    for each candidate ``c`` and proxy ``p`` (paper Algorithm 1, lines 8-11; Eqs. 8-9):

    1. ``s ← y^V_c`` on ``P_{c,p}``;
    2. ``s ← clip(s - λ_s ∂L_data(θ'(s))/∂s, 0, 1)``, the gradient by the closed form of
       :func:`soft_label_grad_batched` (skipped with ``soft_labels=False``);
    3. ``θ_{c,p} ← θ_{c,p} - β ∇_θ L_pair(θ_{c,p}; s)``.

    The expensive data gradient (by :mod:`lightning_mbo.functional.outer_dot`) is evaluated only for
    proxy copies with a non-empty mask (gathered first: one sync with the device). No input is modified.

    Args:
        params: StackedMLP tensors with leading dims ``(C, P)``, e.g. ``layers.0.weight``
            ``(C, P, D, H)``, ``layers.0.bias`` ``(C, P, 1, H)``: each candidate's own copy of
            the ``P`` proxies.
        x_nb: ``(C, K, D)`` neighbourhood points of each candidate.
        consensus: ``(C, n_pairs)`` consensus labels (0/1).
        mask: ``(C, P, n_pairs)`` bool disagreement masks.
        outer: the outer objective's training set (every row enters ``L_data``), chunking and arithmetic.
        activation: hidden activation of the proxies.
        beta: inner and mentoring learning rate ``β``.
        lambda_s: soft-label learning rate ``λ_s``.
        soft_labels: refine labels by the bi-level step (default) or use hard labels (ablation).

    Returns:
        ``(new_params, soft)``: the mentored tensors, same shapes as ``params`` (bit-identical
        where a proxy's mask is empty), and ``(C, P, n_pairs)`` the labels used: refined on each
        proxy's mask, the consensus elsewhere.
    """
    c, p, n_pairs = mask.shape
    m = c * p
    flat = _flatten(params, 2)
    x_flat = _per_copy(x_nb, mask)
    mask_flat = mask.reshape(m, n_pairs)
    soft = consensus.to(x_nb.dtype).unsqueeze(1).expand(c, p, n_pairs).reshape(m, n_pairs).clone()
    if soft_labels:
        active = mask_flat.any(-1).nonzero().squeeze(-1)
        if active.numel() > 0:
            s_a, mask_a = soft[active], mask_flat[active]
            g_s = _soft_label_grad_flat({n: t[active] for n, t in flat.items()}, x_flat[active], s_a, mask_a, outer,
                                        activation, beta)
            refined = torch.where(mask_a, (s_a - lambda_s * g_s).clamp(0.0, 1.0), s_a)
            soft = soft.index_copy(0, active, refined)
    # Mentoring step; an empty mask gives an exactly zero gradient, so θ is left unchanged.
    g_pair = _pair_grad(flat, x_flat, soft, mask_flat, activation)
    new = {n: (flat[n] - beta * g_pair[n]).reshape(params[n].shape) for n in params}
    return new, soft.reshape(c, p, n_pairs)
