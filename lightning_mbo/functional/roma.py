"""RoMA's equations as pure torch functions (no Lightning).

Yu, Ahn, Song, Shin, "RoMA: Robust Model Adaptation for Offline Model-based Optimization",
NeurIPS 2021 (arXiv 2110.14188), as the authors' code runs it (github.com/sihyun-yu/RoMA,
commit 08b1ab5, ``design_baselines/safeweight/trainers.py``; line numbers below refer to it).

A Gaussian model ``f_w(x) = (μ_w(x), σ_w(x))`` is pre-trained robustly, then adapted before every
design step. Every parameter tensor here has the network dimension ``M`` first (stacked
networks, :class:`lightning_mbo.nn.StackedMLP`); one "tensor" of the released code is one
network's slice ``t[m]``, so every norm below is taken per slice.

1. Pre-training (``train_step``, lines 60-112), per batch with noisy inputs ``x + N(0, 0.2²)``:
   ``S`` steps (``steps_per_update`` 20) that raise the NLL from ``w₀``,
   ``w ← w − (η/S)·(‖w₀‖/‖g‖)·g`` with ``g = ∇_w mean log N(y | μ_w(x), σ_w(x))``
   (:func:`normalised_step`, ``eps = 0``); the NLL gradient at the perturbed weights, clipped to
   norm 1 per tensor (:func:`clip_slices`); an Adam step; the perturbation ``w − w₀`` removed.
2. Adaptation (``fix_step``, lines 135-159): a copy ``w̃`` of the model takes ``K = 5S`` steps
   ``w̃ ← w̃ − (η/K)·(‖w‖/(‖g‖ + 1e-6))·g`` (``w`` the model's own weights, :func:`normalised_step`)
   on the objective ``mean_c ‖∇_x μ_w̃(x_c)‖ + α·mean_c NLL(y_c | x_c)`` of the current designs
   (:func:`adaptation_objective`).
3. Design step (``update_step``, lines 178-202): one Adam step on ``x`` maximising
   ``μ_w̃(x) − (μ_w̃(x) − μ_w(x₀))² / (2·region)`` (:func:`trust_region_score`), then the labels
   ``y ← μ_w̃(x)`` at the new designs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "adaptation_objective",
    "clip_slices",
    "gaussian_nll",
    "input_gradient_norms",
    "normalised_step",
    "slice_norms",
    "trust_region_score",
]


def slice_norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The L2 (Frobenius) norm of each network's slice of each tensor.

    Args:
        tensors: tensors of shapes ``(M, ...)``.

    Returns:
        One ``(M, 1, ..., 1)`` tensor per input (``‖t[m]‖`` in slot ``m``), to broadcast against it.
    """
    return [t.reshape(t.shape[0], -1).norm(dim=1).reshape(t.shape[0], *([1] * (t.dim() - 1))) for t in tensors]


def normalised_step(params: Sequence[Tensor], anchor_norms: Sequence[Tensor], grads: Sequence[Tensor],
                    step: float, eps: float = 0.0) -> list[Tensor]:
    """RoMA's weight step, scaled to the size of the anchor weights, per network slice.

    ``w ← w − step · ‖w_a‖ / (‖g‖ + eps) · g`` for every tensor and network, with ``‖·‖`` the norm
    of that network's slice. Pre-training (released ``trainers.py:79-82``) descends the
    log-likelihood (``g = ∇ log p``, so the NLL rises) with ``w_a = w₀`` the unperturbed weights,
    ``step = η/S`` and ``eps = 0``; adaptation (lines 156-159) descends its objective with ``w_a``
    the model's weights, ``step = η/K`` and ``eps = 1e-6``. Each step moves a slice by at most
    ``step·‖w_a‖`` whatever the gradient's scale.

    Args:
        params: tensors ``(M, ...)`` to step.
        anchor_norms: ``(M, 1, ..., 1)`` norms ``‖w_a‖`` per tensor (:func:`slice_norms`).
        grads: gradients, the shapes of ``params``.
        step: step size per unit of ``‖w_a‖``.
        eps: added to ``‖g‖`` (0 as released in pre-training: a zero gradient gives NaN there).

    Returns:
        The stepped tensors (new tensors; ``params`` are not modified).
    """
    return [w - step * (a / (n + eps)) * g
            for w, a, g, n in zip(params, anchor_norms, grads, slice_norms(grads), strict=True)]


def clip_slices(grads: Sequence[Tensor], max_norm: float = 1.0) -> list[Tensor]:
    """``tf.clip_by_norm`` per network slice: ``g · c / max(‖g‖, c)`` (released ``trainers.py:100``).

    Slices with norm at most ``c`` are unchanged (a zero slice stays zero); the others are scaled to
    norm ``c``.

    Args:
        grads: tensors ``(M, ...)``.
        max_norm: ``c`` (> 0).

    Returns:
        The clipped tensors, the shapes of ``grads``.
    """
    return [g * (max_norm / n.clamp(min=max_norm)) for g, n in zip(grads, slice_norms(grads), strict=True)]


def gaussian_nll(mean: Tensor, logstd: Tensor, y: Tensor) -> Tensor:
    """``−log N(y | μ, e^s) = ½((y − μ)/e^s)² + s + ½ log 2π``, elementwise (shapes broadcast)."""
    return 0.5 * ((y - mean) / logstd.exp()) ** 2 + logstd + 0.5 * math.log(2 * math.pi)


def input_gradient_norms(mean: Tensor, x: Tensor, membership: Tensor) -> Tensor:
    """``‖∇_x μ_{r(c)}(x_c)‖`` per design ``c``, differentiable in the weights (``create_graph``).

    Args:
        mean: ``(R, C)`` ``μ_r(x_c)`` of every network at every design, built from ``x``.
        x: ``(C, D)`` the designs (``requires_grad``).
        membership: ``(R, C)`` 1 where design ``c`` belongs to network ``r`` (one 1 per column).

    Returns:
        ``(C,)`` the L2 norm of each design's input gradient under its own network (the released
        ``tf.norm(reshape(∇_x Σ μ, [C, -1]), axis=1)``, ``trainers.py:148-149``).
    """
    (grad,) = torch.autograd.grad((mean * membership).sum(), x, create_graph=True)
    return grad.reshape(grad.shape[0], -1).norm(dim=1)


def adaptation_objective(mean: Tensor, logstd: Tensor, x: Tensor, y: Tensor, membership: Tensor,
                         alpha: float = 1.0) -> Tensor:
    """RoMA's adaptation objective per network (released ``fix_step``, ``trainers.py:140-151``).

    ``L_r = Σ_c m_rc (‖∇_x μ_r(x_c)‖ + α·NLL(y_c | μ_r(x_c), σ_r(x_c))) / Σ_c m_rc``: the mean
    input-gradient norm (smoothness) plus α times the NLL of the current labels, over the network's
    own designs. A network without designs gets 0.

    Args:
        mean: ``(R, C)`` predicted means ``μ_r(x_c)``, built from ``x`` (graph kept).
        logstd: ``(R, C)`` predicted log-std ``s_r(x_c)``.
        x: ``(C, D)`` designs (``requires_grad``).
        y: ``(C,)`` labels (the released ``sol_y``).
        membership: ``(R, C)`` 0/1, see :func:`input_gradient_norms`.
        alpha: weight α of the label term.

    Returns:
        ``(R,)`` objectives; the gradient of their sum reaches each network through its own designs.
    """
    m = membership.to(mean)
    per_design = input_gradient_norms(mean, x, m).unsqueeze(0) + alpha * gaussian_nll(mean, logstd, y.unsqueeze(0))
    return (m * per_design).sum(1) / m.sum(1).clamp(min=1)


def trust_region_score(mean: Tensor, start_mean: Tensor, region: float = 4.0) -> Tensor:
    """What a design ascends (released ``update_step``, ``trainers.py:189-194``, minimised there with the sign flipped).

    ``μ_w̃(x) − (μ_w̃(x) − μ_w(x₀))² / (2·region)``: the adapted model's prediction, penalised
    quadratically for moving away from the unadapted model's prediction at the design's start.

    Args:
        mean: ``(C,)`` ``μ_w̃(x)`` of the adapted model.
        start_mean: ``(C,)`` ``μ_w(x₀)`` of the unadapted model at each design's start.
        region: the trust region's size (released ``region`` 4, so the weight is 1/8).

    Returns:
        ``(C,)`` scores.
    """
    return mean - (mean - start_mean) ** 2 / (2 * region)
