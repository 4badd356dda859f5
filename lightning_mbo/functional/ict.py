"""ICT (importance-aware co-teaching) as pure tensor functions: the equations of one fine-tuning step.

Yuan, Chen, Liu, Neiswanger, Liu, "Importance-aware Co-teaching for Offline Model-based
Optimization", NeurIPS 2023 (Advances in NeurIPS 36, pp. 55718-55733); released code
``mila-iqia/Importance-aware-Co-teaching`` (``ICT.py``). Three pre-trained proxies ``f_1, f_2, f_3``
are fine-tuned along the ascent path of the best training design. Every path step ``t``
(``ICT.py:65-233``):

1. ``x ← Adam step on -(f_1 + f_2 + f_3)(x) / 3`` (lr 0.1 on discrete tasks);
2. ``K`` pseudo-labelled neighbours ``x_k = x + δ ε_k`` (δ = 0.1, ``K`` = 128), labelled
   ``y^p_k = f_p(x_k)`` by every proxy before any update (:func:`neighbourhood`);
3. three co-teaching rounds, :data:`ROUNDS`: a teacher ``τ`` labels, its two peers are the
   students. Each student ranks the ``K`` neighbours by its own loss ``ℓ_k = (f(x_k) - y^τ_k)²`` and
   hands its ``n`` smallest-loss samples to the OTHER student (:func:`coteaching_select`; the
   paper's "pseudo-label-driven co-teaching", ``ICT.py:9-25``);
4. meta-learned sample weights (the paper's "meta-learning-based sample reweighting";
   ``ICT.py:99-130``): from ``w = 1``, a virtual Adam step ``θ'(w)`` (lr α = 1e-3, the real
   optimizer's state) on the weighted loss of the selected samples (:func:`weighted_loss`), then
   ``g = ∂ L_val(θ'(w)) / ∂w`` with ``L_val`` the MSE over the static training set, and
   :func:`meta_weight_update` ``w ← clip(w - β clip(g / ||g||₁, ±0.2), 0, 2)`` (β = 0.3);
5. one real Adam(α) step of each student on :func:`real_step_loss`.

The released code has two bugs (``Mode``): ``released`` (the faithful default) and ``fixed``:

* ``ε`` is ONE scalar per neighbour, ``np.random.normal(0, 1)`` added to every coordinate, so the
  neighbours lie on the line ``x + δ ε 1`` (``ICT.py:76-77``); ``fixed``: ``ε ~ N(0, I)``.
* the weights ``w`` ``(n,)`` multiply losses of shape ``(n, 1)``, which broadcasts to ``(n, n)``:
  the meta step's loss is ``(Σ_b w_b)(Σ_a ℓ_a) / n`` (``ICT.py:108-109``), so ``g`` has ``n``
  equal entries, ``g / ||g||₁ = ±1/n`` and every weight becomes ``1 ∓ β / n`` = ``1 ∓ 0.0375`` (or
  stays 1 where ``g = 0``); the real step multiplies the ``n`` weights with ALL ``K`` neighbours'
  losses ``(K, 1)`` (``ICT.py:132-133``): ``(Σ_b w_b)(Σ_{k≤K} ℓ_k) / n``. Net effect: each real
  step is a plain Adam step on the summed loss of all ``K`` neighbours, scaled by ``1 ± 0.0375``
  (a factor Adam, nearly invariant to the loss's scale, all but ignores); neither the small-loss
  selection nor the per-sample weights reach it. ``fixed``: ``Σ_a w_a ℓ_a / n`` over the
  selected samples, in both steps.

Here: these equations. The batched torch.func path over many proxies at once is
:mod:`lightning_mbo.functional.ict_batched`, the ``higher`` reference it is proven equal to
:mod:`lightning_mbo.functional.ict_higher`. This module imports no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lightning_mbo.validation import SettingsError, check_choice, check_range

__all__ = [
    "NORM_EPS",
    "ROUNDS",
    "FineTuning",
    "MetaRows",
    "Mode",
    "coteaching_select",
    "draw_noise",
    "meta_rows",
    "meta_weight_update",
    "neighbourhood",
    "real_step_loss",
    "small_loss_indices",
    "weighted_loss",
]

Mode = Literal["released", "fixed"]
MetaRows = Literal["full", "half", "top128"]

#: Co-teaching rounds of one step, in the released order: ``(teacher, (student, student))``
#: (0-based; ``ICT.py:98``, ``144``, ``190``: f3 teaches f1 and f2, f2 teaches f1 and f3, f1 teaches f2 and f3).
ROUNDS: tuple[tuple[int, tuple[int, int]], ...] = ((2, (0, 1)), (1, (0, 2)), (0, (1, 2)))

#: ``torch.nn.functional.normalize``'s floor on the norm (``ICT.py:115``).
NORM_EPS = 1e-12


@dataclass(frozen=True)
class FineTuning:
    """Settings of ICT's fine-tuning along the best design's path (released names in brackets).

    Attributes:
        steps: path steps ``T`` (``Tmax``, 100).
        x_lr: Adam's learning rate on the path design (``ft_lr``: 0.1 discrete, 1e-3 continuous).
        neighbours: pseudo-labelled neighbours ``K`` per step (``K``, 128).
        noise: neighbourhood scale δ (``noise_coefficient``, 0.1).
        select: small-loss samples ``n`` each student hands its peer (``num_coteaching``; 8 in
            ``README.md:49``; ``n = K`` is co-teaching without selection).
        alpha: the proxies' Adam learning rate α, virtual and real steps (``alpha``, 1e-3).
        beta: the weights' step size β (``beta``, 0.3 in ``README.md:49``).
        clip: bound on each normalised weight gradient (``clamp_max = -clamp_min``, 0.2).
        reweighting: learn the weights (else they stay 1; the paper's "w/o reweighting").
        mode: ``released`` (the bugs above) or ``fixed``.
    """

    steps: int = 100
    x_lr: float = 0.1
    neighbours: int = 128
    noise: float = 0.1
    select: int = 8
    alpha: float = 1e-3
    beta: float = 0.3
    clip: float = 0.2
    reweighting: bool = True
    mode: Mode = "released"

    def __post_init__(self) -> None:
        check_range("finetune_steps (--model.init_args.finetune_steps)", self.steps, 0)
        check_range("finetune_lr (--model.init_args.finetune_lr)", self.x_lr, 0, strict=True)
        check_range("neighbours (--model.init_args.neighbours)", self.neighbours, 2, hint="co-teaching ranks samples")
        check_range("noise (--model.init_args.noise)", self.noise, 0)
        check_range("num_coteaching (--model.init_args.num_coteaching)", self.select, 1)
        if self.select > self.neighbours:
            raise SettingsError(f"num_coteaching (--model.init_args.num_coteaching) must be <= neighbours "
                                f"({self.neighbours}), got {self.select}: a student picks among the K neighbours")
        check_range("alpha (--model.init_args.alpha)", self.alpha, 0, strict=True)
        check_range("beta (--model.init_args.beta)", self.beta, 0)
        check_range("clip (--model.init_args.clip)", self.clip, 0)
        check_choice("mode (--model.init_args.mode)", self.mode, Mode)


def draw_noise(shape: tuple[int, ...], dim: int, mode: Mode, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal neighbourhood noise ``ε``.

    Args:
        shape: leading shape, e.g. ``(T, K)``.
        dim: design size ``D``.
        mode: ``released``: one scalar per neighbour (``ICT.py:76``), shape ``(*shape, 1)``, which
            broadcasts over the ``D`` coordinates; ``fixed``: ``(*shape, D)``.
        generator: CPU random generator.

    Returns:
        ``(*shape, 1)`` or ``(*shape, D)`` float32 draws on the CPU.
    """
    check_choice("mode", mode, Mode)
    return torch.randn((*shape, 1 if mode == "released" else dim), generator=generator)


def neighbourhood(x: Tensor, noise: Tensor, scale: float) -> Tensor:
    """Pseudo-labelled neighbours ``x_k = x + δ ε_k`` (``ICT.py:75-78``).

    Args:
        x: ``(..., D)`` path designs.
        noise: ``(..., K, 1)`` (released: the same ``ε_k`` for every coordinate) or ``(..., K, D)``.
        scale: δ.

    Returns:
        ``(..., K, D)``.
    """
    return x.unsqueeze(-2) + scale * noise.to(x)


def small_loss_indices(losses: Tensor, n: int) -> Tensor:
    """Indices of the ``n`` smallest losses, smallest first (ties: lower index first).

    Args:
        losses: ``(..., K)``.
        n: how many, ``1 <= n <= K``.

    Returns:
        ``(..., n)`` long.
    """
    return torch.argsort(losses, dim=-1, stable=True)[..., :n]


def coteaching_select(losses: Tensor, n: int) -> Tensor:
    """Co-teaching's exchange: each student trains on its PEER's ``n`` smallest-loss samples.

    ``ICT.py:19-23``: ``ind_1_update`` (student 1's picks) feed student 2 and
    ``ind_2_update`` feed student 1.

    Args:
        losses: ``(..., 2, K)`` each student's per-sample loss on the teacher's labels.
        n: samples picked by each student.

    Returns:
        ``(..., 2, n)``: row ``s`` holds the samples student ``s`` trains on (picked by ``1 - s``).
    """
    if losses.shape[-2] != 2:
        raise ValueError(f"co-teaching pairs two students: losses must be (..., 2, K), got {tuple(losses.shape)}")
    return small_loss_indices(losses, n).flip(-2)


def weighted_loss(weights: Tensor, losses: Tensor, mode: Mode) -> Tensor:
    """The meta step's loss on the selected samples (``ICT.py:108-109``).

    ``released``: ``(Σ_b w_b)(Σ_a ℓ_a) / n`` (``w`` ``(n,)`` times ``ℓ`` ``(n, 1)`` summed over the
    broadcast ``(n, n)``); ``fixed``: ``Σ_a w_a ℓ_a / n``.

    Args:
        weights: ``(..., n)``.
        losses: ``(..., n)`` the selected samples' losses, in the order of ``weights``.
        mode: ``released`` or ``fixed``.

    Returns:
        ``(...)``.
    """
    n = weights.shape[-1]
    if mode == "released":
        return weights.sum(-1) * losses.sum(-1) / n
    return (weights * losses).sum(-1) / n


def real_step_loss(weights: Tensor, all_losses: Tensor, selected_losses: Tensor, mode: Mode) -> Tensor:
    """The real Adam step's loss (``ICT.py:132-133``).

    ``released``: ``(Σ_b w_b)(Σ_{k≤K} ℓ_k) / n``: the ``n`` weights ``(n,)`` times ALL ``K``
    neighbours' losses ``(K, 1)``; ``fixed``: ``Σ_a w_a ℓ_a / n`` on the selected samples.

    Args:
        weights: ``(..., n)``.
        all_losses: ``(..., K)`` every neighbour's loss (used by ``released``).
        selected_losses: ``(..., n)`` the selected samples' losses (used by ``fixed``).
        mode: ``released`` or ``fixed``.

    Returns:
        ``(...)``.
    """
    if mode == "released":
        return weights.sum(-1) * all_losses.sum(-1) / weights.shape[-1]
    return weighted_loss(weights, selected_losses, "fixed")


def meta_weight_update(weights: Tensor, grad: Tensor, beta: float, clip: float = 0.2) -> Tensor:
    """``w ← clip(w - β clip(g / max(||g||₁, 1e-12), -c, c), 0, 2)`` (``ICT.py:114-118``).

    Args:
        weights: ``(..., n)``.
        grad: ``(..., n)`` ``∂ L_val(θ'(w)) / ∂w``.
        beta: β.
        clip: ``c``.

    Returns:
        ``(..., n)`` in ``[0, 2]``; ``w`` itself where ``g = 0``.
    """
    unit = grad / grad.abs().sum(-1, keepdim=True).clamp(min=NORM_EPS)
    return (weights - beta * unit.clamp(-clip, clip)).clamp(0.0, 2.0)


def meta_rows(y: Tensor, which: MetaRows) -> Tensor:
    """Rows of the static set whose MSE is the meta objective (``reweight_mode``, ``ICT.py:41-48``).

    Args:
        y: ``(N,)`` scores.
        which: ``full`` (every row, what the paper reports), ``half`` (the better half) or
            ``top128`` (the 128 best).

    Returns:
        ``(N',)`` row indices.
    """
    check_choice("reweight_mode (--model.init_args.reweight_mode)", which, MetaRows)
    order = torch.argsort(y, stable=True)
    if which == "full":
        return order
    return order[-(len(order) // 2):] if which == "half" else order[-128:]
