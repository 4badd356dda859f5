"""The fast outer-pass kernel of Tri-mentoring's batched backend, with its memory heuristics.

:func:`outer_dot` is a hand-written forward and backward pass over the ``N`` training rows that
gives ``u_a = <∇_θ' L_data(θ'), ∇_θ f(x_a; θ)>`` at the ``K`` points of ``M`` stacked MLP members
without forming the weight gradient ``∇_θ' L_data(θ')``; :func:`auto_chunk` sizes its chunks of
rows to a memory budget. It is used by the batched backend of Tri-mentoring
(:func:`lightning_mbo.functional.tri_mentoring.soft_label_grad_batched`, the closed-form label
gradient of paper Eqs. 8-9): Chen, Beckham, Liu, Liu, Pal, "Parallel-mentoring for Offline
Model-based Optimization", NeurIPS 2023 (arXiv 2309.11592).

This module imports no Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lightning_mbo.nn import activation_fn, activation_grad_fn
from lightning_mbo.validation import check_choice

__all__ = [
    "OuterMSE",
    "OuterPrecision",
    "auto_chunk",
    "outer_dot",
]


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


@dataclass(frozen=True)
class OuterMSE:
    """The outer objective of the soft-label step (paper Eq. 9), ``L_data(θ) = 1/N Σ_n (f(x_n; θ)
    - y_n)²`` over the whole static training set, and how the pass over its rows is computed.

    Attributes:
        x: ``(N, D)`` static training inputs (at least one row).
        y: ``(N,)`` static training scores (an ``(N, 1)`` column is flattened).
        data_chunk: rows per chunk of the pass (``None``: :func:`auto_chunk`).
        precision: ``float32`` (default, what the released code runs), ``tf32`` (float32
            tensors, products on a GPU's TensorFloat-32 matrix units; no effect on CPU) or
            ``bfloat16`` (the pass over the ``N`` rows in bfloat16: weights, inputs and
            activations rounded, products accumulated in float32; the sums over rows and
            everything at the ``K`` points stay in the parameters' dtype).
    """

    x: Tensor
    y: Tensor
    data_chunk: int | None = None
    precision: OuterPrecision = "float32"

    def __post_init__(self) -> None:
        check_choice("outer precision", self.precision, OuterPrecision)
        object.__setattr__(self, "y", self.y.reshape(-1))
        if self.x.shape[0] == 0:
            raise ValueError("the outer MSE needs at least one training row (x_data is empty)")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"the outer MSE has {self.x.shape[0]} inputs but {self.y.shape[0]} scores")


def outer_dot(
    inner: dict[str, Tensor],
    params: dict[str, Tensor],
    x_nb: Tensor,
    outer: OuterMSE,
    activation: str = "relu",
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
        outer: the training set ``L_data`` runs over, and the pass's chunking and arithmetic.
        activation: hidden activation.

    Returns:
        ``(u (M, K), pred (M, K))`` with ``pred`` the members' predictions at the points at ``θ``.
    """
    x_data, y_data, precision = outer.x, outer.y, outer.precision
    n = x_data.shape[0]
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

    step = auto_chunk(inner, x_data) if outer.data_chunk is None else max(int(outer.data_chunk), 1)
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
