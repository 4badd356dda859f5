"""Tri-mentoring (parallel-mentoring) as pure tensor functions.

Implements section 4 of ``docs/METHODS.md`` (Chen et al., "Parallel-mentoring for Offline
Model-based Optimization", NeurIPS 2023): voting-based pairwise supervision (paper Eq. 5) and
adaptive soft-labelling (paper Eqs. 8-9), for ``P`` proxies (three in the paper).

Notation used throughout:

* ``K`` neighbourhood points ``x_1..x_K`` around the current design, ``n_pairs = K(K-1)/2``
  pairs ``k = (i, j)`` with ``i < j`` in row-major order.
* ``f_m`` proxy ``m`` with parameters ``θ_m``; ``d_k(θ) = f(x_i; θ) - f(x_j; θ)``.
* ``P_m`` the pairs on which proxy ``m`` disagrees with the consensus.
* ``L_pair(θ; s) = 1/|P_m| Σ_{k∈P_m} BCE(σ(d_k(θ)), s_k)`` with
  ``BCE(p, s) = -(s log(p + 1e-9) + (1 - s) log(1 - p + 1e-9))``.
* ``L_data(θ) = 1/N Σ_n (f(x_n; θ) - y_n)²`` over the whole static training set.

One mentoring step of proxy ``m`` (METHODS 4, step 6):

1. ``s ← y^V`` on ``P_m`` (hard consensus labels);
2. inner, paper Eq. 8: ``θ'(s) = θ - β ∇_θ L_pair(θ; s)``;
3. outer, paper Eq. 9: ``s ← clip(s - λ_s ∂L_data(θ'(s))/∂s, 0, 1)``;
4. mentor: ``θ ← θ - β ∇_θ L_pair(θ; s)``.

Two backends implement this step with the same semantics:

* :func:`mentor_proxy_higher`, the reference: one candidate and one proxy at a time, the
  bi-level step differentiated by ``higher`` exactly as in the authors' released code;
* :func:`mentor_batched`: all candidates and proxies at once with ``torch.func``, the label
  gradient from its closed form (see :func:`soft_label_grad_batched`).

This module imports no Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import higher
import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from lightning_mbo.nn import activation_fn, activation_grad_fn, member_forward

__all__ = [
    "EPS",
    "disagreement_mask",
    "majority_vote",
    "mentor_batched",
    "mentor_proxy_higher",
    "neighbourhood",
    "outer_dot",
    "pair_indices",
    "pair_loss",
    "pairwise_labels",
    "predict_stacked",
    "soft_label_grad_batched",
    "soft_label_grad_higher",
    "summed_rank_labels",
]

EPS = 1e-9
"""The constant added inside both logarithms of the pair loss (as in the released code)."""


# ----------------------------------------------------------------------------------------------
# Voting-based pairwise supervision (METHODS 4, steps 1-4; paper Section 3.1)
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
    """Which pairs each proxy is mentored on: ``P_m = {k : y^m_k ≠ y^V_k}`` (METHODS 4, step 4).

    Args:
        labels: ``(..., P, n_pairs)`` labels of each proxy.
        consensus: ``(..., n_pairs)`` consensus labels.

    Returns:
        ``(..., P, n_pairs)`` bool, True where proxy ``p``'s label differs from the consensus.
    """
    return labels != consensus.unsqueeze(-2)


def pair_loss(diff: Tensor, soft: Tensor, mask: Tensor) -> Tensor:
    """Masked pairwise binary cross-entropy (METHODS 4, step 5; paper Eq. 6).

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
# Reference backend: `higher`, one candidate and one proxy at a time (the released algorithm)
# ----------------------------------------------------------------------------------------------


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

    METHODS 4, step 6 / paper Algorithm 1, lines 8-11:

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


# ----------------------------------------------------------------------------------------------
# Batched backend: torch.func over candidates x proxies
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


OuterPrecision = Literal["float32", "tf32", "bfloat16"]
"""Arithmetic of the outer MSE's large matrix products (see :func:`outer_dot`)."""


@contextmanager
def _tf32_matmul(enabled: bool) -> Iterator[None]:
    """Let float32 CUDA matrix products use TensorFloat-32 inside the block (restored after)."""
    if not enabled:
        yield
        return
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        previous = matmul.fp32_precision
        matmul.fp32_precision = "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
    else:
        previous = matmul.allow_tf32
        matmul.allow_tf32 = True
        try:
            yield
        finally:
            matmul.allow_tf32 = previous


def _layers(params: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """``[(W_l (M, in, out), b_l (M, 1, out))]`` of stacked StackedMLP tensors."""
    return [(params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]) for i in range(len(params) // 2)]


def auto_chunk(params: dict[str, Tensor], x_data: Tensor) -> int:
    """Rows per chunk of the outer MSE so that ``M`` members' activations fit a memory budget.

    On a GPU the budget is a quarter of the memory free at the call (at least 1 GiB, at most
    16 GiB) for all live activations. On CPU each ``(M, rows, width)`` activation is kept near
    8 MiB: larger blocks are served from freshly mapped pages at every chunk (glibc maps blocks
    above its threshold, at most 32 MiB, straight from the OS), and the page faults and cache
    misses then cost more than the products. At proxies 2x64 with 384 copies, chunks of about
    8 MiB ran 2.3x faster than chunks of 40 MiB. At least 64 rows either way.
    """
    members = next(iter(params.values())).shape[0]
    hidden = [w.shape[-1] for w, _ in _layers(params)[:-1]] or [1]
    size = x_data.element_size()
    if x_data.is_cuda:
        free, _ = torch.cuda.mem_get_info(x_data.device)
        budget = min(max(free // 4, 2**30), 2**34)
        # Per hidden layer and row, about three live tensors of its width: the activation (turned
        # into the derivative mask in place), the backpropagated signal and a product's output.
        per_row = 3 * members * sum(hidden) * size
    else:
        budget = 2**23
        per_row = members * max(hidden) * size
    return max(64, budget // max(per_row, 1))


def _point_signals(
    params: dict[str, Tensor], x_nb: Tensor, activation: str
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Predictions and per-layer factors of ``∇_θ f(x_a; θ)`` at the ``K`` points of every member.

    For layer ``l`` (input activation ``ā_{l-1}``, backprop signal ``δ̄_l = ∂f/∂z_l``),
    ``∇_{W_l} f(x_a) = ā_{l-1}[a]ᵀ δ̄_l[a]`` and ``∇_{b_l} f(x_a) = δ̄_l[a]``.

    Args:
        params: ``(M, ...)`` member tensors ``θ``.
        x_nb: ``(M, K, D)``.
        activation: hidden activation.

    Returns:
        ``(pred (M, K), [ā_0 .. ā_{L-1}] each (M, K, in_l), [δ̄_1 .. δ̄_L] each (M, K, out_l))``.
    """
    act, act_grad = activation_fn(activation), activation_grad_fn(activation)
    layers = _layers(params)
    acts, derivs = [x_nb], []
    a = x_nb
    for i, (w, b) in enumerate(layers):
        z = torch.baddbmm(b, a, w)
        if i < len(layers) - 1:
            derivs.append(act_grad(z))
            a = act(z)
            acts.append(a)
        else:
            a = z
    pred = a[..., 0]
    delta = torch.ones_like(a)
    deltas = [delta]
    for i in range(len(layers) - 1, 0, -1):
        delta = torch.bmm(delta, layers[i][0].transpose(1, 2)) * derivs[i - 1]
        deltas.append(delta)
    return pred, acts, deltas[::-1]


def outer_dot(
    inner: dict[str, Tensor],
    params: dict[str, Tensor],
    x_nb: Tensor,
    x_data: Tensor,
    y_data: Tensor,
    activation: str = "relu",
    data_chunk: int | None = None,
    precision: OuterPrecision = "float32",
) -> tuple[Tensor, Tensor]:
    """``u_a = <∇_θ' L_data(θ'), ∇_θ f(x_a; θ)>`` for the ``K`` points of ``M`` stacked members.

    The outer gradient ``g = ∇_θ' L_data(θ')`` is never formed. For an MLP, ``g``'s block of
    layer ``l`` is ``a_{l-1}ᵀ Δ_l`` (input activations and backprop signals over the ``N`` rows
    at ``θ'``) and ``∇_{W_l} f(x_a; θ)`` is the rank-one ``ā_{l-1}[a]ᵀ δ̄_l[a]``, so

    ``<g_{W_l}, ∇_{W_l} f(x_a)> = Σ_n (a_{l-1}[n]·ā_{l-1}[a]) (Δ_l[n]·δ̄_l[a])``

    and the bias block gives ``Σ_n Δ_l[n]·δ̄_l[a]``: ``O(N K width)`` each, instead of the
    ``O(N width²)`` product that forms ``g_{W_l}``. Backpropagation is linear in the output
    gradient, so ``Δ_l[n] = e_n J_l[n]`` with ``e_n = 2 (f(x_n; θ') - y_n) / N`` and ``J_l`` the
    backpropagation of ``f`` itself; the per-row factor ``e_n`` is applied to the small
    ``(N, K)`` results, never to a ``(N, width)`` tensor. With ReLU the activations are
    overwritten in place by their derivative masks, and the last layer's weights are folded into
    the product that carries ``J`` backwards. What remains per hidden-to-hidden layer are two
    large products (forward and backward) where autograd's full gradient needs three.

    Args:
        inner: ``(M, ...)`` member tensors ``θ'`` at which the data loss is differentiated.
        params: ``(M, ...)`` member tensors ``θ`` at which ``f``'s gradients are taken.
        x_nb: ``(M, K, D)`` points.
        x_data: ``(N, D)`` static training inputs.
        y_data: ``(N,)`` static training scores.
        activation: hidden activation.
        data_chunk: rows per chunk (``None``: :func:`auto_chunk`).
        precision: ``float32`` (default, what the released code runs), ``tf32`` (float32
            tensors, products on a GPU's TensorFloat-32 matrix units; no effect on CPU) or
            ``bfloat16`` (the pass over the ``N`` rows in bfloat16: weights, inputs and
            activations rounded, products accumulated in float32; the sums over rows and
            everything at the ``K`` points stay in the parameters' dtype).

    Returns:
        ``(u (M, K), pred (M, K))`` with ``pred`` the members' predictions at the points at ``θ``.
    """
    if precision not in ("float32", "tf32", "bfloat16"):
        raise ValueError(f"unknown outer precision {precision!r}; choose 'float32', 'tf32' or 'bfloat16'")
    n = x_data.shape[0]
    if n == 0:
        raise ValueError("x_data must have at least one row")
    pred, p_acts, p_deltas = _point_signals(params, x_nb, activation)
    dtype = x_nb.dtype
    low = torch.bfloat16 if precision == "bfloat16" else dtype
    layers = [(w.to(low), b.to(low)) for w, b in _layers(inner)]
    depth = len(layers)
    p_acts = [t.to(low) for t in p_acts]
    # The last layer maps to one output: J_{L-2} = act'(z_{L-2}) ⊙ w_L. Its weights scale the
    # columns of the product that carries J backwards and of the K points' signals.
    w_out = layers[-1][0][..., 0].unsqueeze(1)  # (M, 1, width)
    p_deltas = [t.to(low) for t in p_deltas[:-1]]
    p_scaled = [t * w_out if i == depth - 2 else t for i, t in enumerate(p_deltas)]
    carry = [w.transpose(1, 2) for w, _ in layers[:-1]]  # W_iᵀ: J_i -> J_{i-1} (used for i > 0)
    if depth > 2:
        carry[depth - 2] = (layers[depth - 2][0] * w_out).transpose(1, 2)
    relu = activation == "relu"
    act, act_grad = activation_fn(activation), activation_grad_fn(activation)

    step = auto_chunk(inner, x_data) if data_chunk is None else max(int(data_chunk), 1)
    members = x_nb.shape[0]
    x_low = x_data.to(low)
    u = torch.zeros_like(pred)
    with _tf32_matmul(precision == "tf32" and x_data.is_cuda):
        for start in range(0, n, step):
            xc = x_low[start : start + step].unsqueeze(0).expand(members, -1, -1)
            acts, pre = [xc], []
            a = xc
            for w, b in layers[:-1]:
                z = torch.baddbmm(b, a, w)
                pre.append(None if relu else z)
                a = z.relu_() if relu else act(z)
                acts.append(a)
            w, b = layers[-1]
            f = torch.baddbmm(b, a, w)[..., 0].to(dtype)
            e = (2.0 / n) * (f - y_data[start : start + step])  # (M, rows): ∂L_data/∂f
            # Output layer: J = 1 and δ̄ = 1, so its term is Σ_n e_n (a[n]·ā[a] + 1).
            s = torch.bmm(acts[-1], p_acts[-1].transpose(1, 2)).to(dtype) + 1
            jm = None  # J_i, materialised below the last hidden layer
            for i in range(depth - 2, -1, -1):
                # J_i = act'(z_i) (⊙ w_L for the last hidden layer)
                d = acts[i + 1].sign_() if relu else act_grad(pre[i])
                jm = d if jm is None else jm * d
                pa = torch.bmm(acts[i], p_acts[i].transpose(1, 2)).to(dtype) + 1
                qd = torch.bmm(jm, p_scaled[i].transpose(1, 2)).to(dtype)
                s = s + qd * pa
                if i > 0:
                    jm = torch.bmm(jm, carry[i])
            u = u + torch.bmm(e.unsqueeze(1), s)[:, 0]
    return u, pred


def _soft_label_grad_flat(
    params: dict[str, Tensor],
    x_nb: Tensor,
    soft: Tensor,
    mask: Tensor,
    x_data: Tensor,
    y_data: Tensor,
    activation: str,
    beta: float,
    data_chunk: int | None,
    precision: OuterPrecision = "float32",
) -> Tensor:
    """:func:`soft_label_grad_batched` on ``M`` flat members.

    Shapes: params ``(M, ...)``, x_nb ``(M, K, D)``, soft and mask ``(M, n_pairs)``; returns
    ``(M, n_pairs)``.
    """
    g_pair = _pair_grad(params, x_nb, soft, mask, activation)
    inner = {n: params[n] - beta * g_pair[n] for n in params}  # θ' = θ - β ∇_θ L_pair(θ; s)
    del g_pair
    # u_a = <∇_θ' L_data(θ'), ∇_θ f(x_a; θ)> for all K points
    u, pred = outer_dot(inner, params, x_nb, x_data, y_data.reshape(-1), activation, data_chunk, precision)
    i, j = pair_indices(x_nb.shape[-2], x_nb.device)
    p = torch.sigmoid(pred[:, i] - pred[:, j])
    # c_k = -∂²BCE/∂d∂s = p(1-p)(1/(p+ε) + 1/(1-p+ε)); exactly 1 for ε = 0.
    c = p * (1 - p) * (1 / (p + EPS) + 1 / (1 - p + EPS))
    count = mask.sum(-1, keepdim=True).clamp(min=1).to(pred.dtype)
    ds = (beta / count) * c * (u[:, i] - u[:, j])
    return torch.where(mask, ds, torch.zeros_like(ds))


def soft_label_grad_batched(
    params: dict[str, Tensor],
    x_nb: Tensor,
    soft: Tensor,
    mask: Tensor,
    x_data: Tensor,
    y_data: Tensor,
    *,
    activation: str = "relu",
    beta: float = 1e-3,
    data_chunk: int | None = None,
    precision: OuterPrecision = "float32",
) -> Tensor:
    """Label gradient ``∂L_data(θ'(s))/∂s`` for all candidates and proxies, in closed form.

    With ``θ'(s) = θ - β ∇_θ L_pair(θ; s)`` (paper Eq. 8) and ``g = ∇_θ' L_data(θ')``:

    ``∂L_data/∂s_k = (β / |P_m|) c_k <g, ∇_θ d_k(θ)>``,
    ``c_k = p_k (1 - p_k) (1/(p_k + ε) + 1/(1 - p_k + ε))``, ``p_k = σ(d_k(θ))``,

    the closed form of METHODS 4 (where ``c_k = 1``, its ``ε → 0`` limit); keeping ``c_k`` makes
    it the exact derivative of the loss with ``ε = 1e-9``, so it matches autograd through
    ``θ'(s)`` (:func:`soft_label_grad_higher`) to rounding. ``u_a = <g, ∇_θ f(x_a)>`` is computed
    for all ``K`` points by :func:`outer_dot` without forming ``g`` (one forward and one backward
    pass over the ``N`` data rows per member, ``data_chunk`` rows at a time, and no product that
    builds a weight gradient), then differenced per pair.

    Args:
        params: StackedMLP tensors with leading dims ``(C, P)``.
        x_nb: ``(C, K, D)`` neighbourhood points of each candidate.
        soft: ``(C, P, n_pairs)`` labels ``s`` at which to differentiate.
        mask: ``(C, P, n_pairs)`` bool, the pairs ``P_m`` of each proxy copy.
        x_data: ``(N, D)`` static training inputs.
        y_data: ``(N,)`` static training scores.
        activation: hidden activation of the proxies.
        beta: inner learning rate ``β``.
        data_chunk: rows of ``x_data`` per chunk (None: sized by :func:`auto_chunk`).
        precision: arithmetic of the outer MSE's large products (see :func:`outer_dot`).

    Returns:
        ``(C, P, n_pairs)``; 0 off the mask (and for proxies with an empty mask).
    """
    c, p, n_pairs = mask.shape
    k, d = x_nb.shape[-2:]
    out = _soft_label_grad_flat(
        _flatten(params, 2),
        x_nb.unsqueeze(1).expand(c, p, k, d).reshape(c * p, k, d),
        soft.reshape(c * p, n_pairs),
        mask.reshape(c * p, n_pairs),
        x_data,
        y_data,
        activation,
        beta,
        data_chunk,
        precision,
    )
    return out.reshape(c, p, n_pairs)


def mentor_batched(
    params: dict[str, Tensor],
    x_nb: Tensor,
    consensus: Tensor,
    mask: Tensor,
    x_data: Tensor,
    y_data: Tensor,
    *,
    activation: str = "relu",
    beta: float = 1e-3,
    lambda_s: float = 0.1,
    soft_labels: bool = True,
    data_chunk: int | None = None,
    precision: OuterPrecision = "float32",
) -> tuple[dict[str, Tensor], Tensor]:
    """One mentoring step of every proxy copy of every candidate at once (batched backend).

    Same semantics as calling :func:`mentor_proxy_higher` for each candidate ``c`` and proxy
    ``p`` (METHODS 4, step 6; paper Eqs. 8-9):

    1. ``s ← y^V_c`` on ``P_{c,p}``;
    2. ``s ← clip(s - λ_s ∂L_data(θ'(s))/∂s, 0, 1)``, the gradient by the closed form of
       :func:`soft_label_grad_batched` (skipped with ``soft_labels=False``);
    3. ``θ_{c,p} ← θ_{c,p} - β ∇_θ L_pair(θ_{c,p}; s)``.

    The expensive data gradient is evaluated only for proxy copies with a non-empty mask (those
    are gathered first, which synchronises with the device once). No input is modified.

    Args:
        params: StackedMLP tensors with leading dims ``(C, P)``, e.g. ``layers.0.weight``
            ``(C, P, D, H)``, ``layers.0.bias`` ``(C, P, 1, H)``: each candidate's own copy of
            the ``P`` proxies.
        x_nb: ``(C, K, D)`` neighbourhood points of each candidate.
        consensus: ``(C, n_pairs)`` consensus labels (0/1).
        mask: ``(C, P, n_pairs)`` bool disagreement masks.
        x_data: ``(N, D)`` static training inputs.
        y_data: ``(N,)`` static training scores.
        activation: hidden activation of the proxies.
        beta: inner and mentoring learning rate ``β``.
        lambda_s: soft-label learning rate ``λ_s``.
        soft_labels: refine labels by the bi-level step (default) or use hard labels (ablation).
        data_chunk: rows of ``x_data`` per chunk of the outer MSE (None: sized by :func:`auto_chunk`).
        precision: arithmetic of the outer MSE's large products (see :func:`outer_dot`).

    Returns:
        ``(new_params, soft)``: the mentored tensors, same shapes as ``params`` (bit-identical
        where a proxy's mask is empty), and ``(C, P, n_pairs)`` the labels used: refined on each
        proxy's mask, the consensus elsewhere.
    """
    c, p, n_pairs = mask.shape
    k, d = x_nb.shape[-2:]
    m = c * p
    flat = _flatten(params, 2)
    x_flat = x_nb.unsqueeze(1).expand(c, p, k, d).reshape(m, k, d)
    mask_flat = mask.reshape(m, n_pairs)
    soft = consensus.to(x_nb.dtype).unsqueeze(1).expand(c, p, n_pairs).reshape(m, n_pairs).clone()
    if soft_labels:
        active = mask_flat.any(-1).nonzero().squeeze(-1)
        if active.numel() > 0:
            s_a, mask_a = soft[active], mask_flat[active]
            g_s = _soft_label_grad_flat(
                {n: t[active] for n, t in flat.items()},
                x_flat[active],
                s_a,
                mask_a,
                x_data,
                y_data,
                activation,
                beta,
                data_chunk,
                precision,
            )
            refined = torch.where(mask_a, (s_a - lambda_s * g_s).clamp(0.0, 1.0), s_a)
            soft = soft.index_copy(0, active, refined)
    # Mentoring step; an empty mask gives an exactly zero gradient, so θ is left unchanged.
    g_pair = _pair_grad(flat, x_flat, soft, mask_flat, activation)
    new = {n: (flat[n] - beta * g_pair[n]).reshape(params[n].shape) for n in params}
    return new, soft.reshape(c, p, n_pairs)
