"""design-bench 2.0.20's discrete "logits" encoding and z-score normalisation statistics."""

from __future__ import annotations

import torch
from torch import Tensor

#: design-bench's soft interpolation between one-hot and uniform.
SOFT_INTERPOLATION = 0.6


def to_logits(x: Tensor, num_classes: int, soft: float = SOFT_INTERPOLATION) -> Tensor:
    """Encode integer designs as design-bench logits.

    ``p = soft * onehot + (1 - soft) / C``; logits are ``log p`` minus class 0's log-probability,
    with class 0's (always zero) slot dropped. For C = 4 a class k > 0 gives ``log 7`` in slot
    k - 1 and 0 elsewhere; class 0 gives ``-log 7`` in every slot.

    Args:
        x: ``(N, L)`` integers in ``[0, C)``.
        num_classes: ``C``.

    Returns:
        ``(N, L, C - 1)`` float32.
    """
    if x.dtype.is_floating_point:
        raise TypeError(f"to_logits expects integer designs, got {x.dtype}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
        raise ValueError(f"designs must lie in [0, {num_classes}), got values in [{int(x.min())}, {int(x.max())}]")
    onehot = torch.nn.functional.one_hot(x.long(), num_classes).float()
    logp = torch.log(soft * onehot + (1.0 - soft) / num_classes)
    return (logp[..., 1:] - logp[..., :1]).float()


def from_logits(logits: Tensor) -> Tensor:
    """Invert :func:`to_logits`: prepend class 0's zero logit and take the argmax.

    Args:
        logits: ``(N, L, C - 1)``.

    Returns:
        ``(N, L)`` int64 designs.
    """
    zeros = torch.zeros_like(logits[..., :1])
    return torch.cat([zeros, logits], dim=-1).argmax(dim=-1)


def zscore_stats(a: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std over the rows (dim 0), std 0 replaced by 1, in ``a``'s dtype.

    design-bench's normalisation statistics: of the visible rows, per element (for discrete
    tasks, of the logits). ``a`` is ``(N, ...)``; the results have shape ``a.shape[1:]``.
    """
    # Accumulated in float64: a float32 sum depends on the reduction's order (threads, layout), and
    # a resumed run must find the statistics its checkpoint holds.
    wide = a.double()
    mean, std = wide.mean(0), wide.std(0, unbiased=False)
    return mean.to(a.dtype), torch.where(std == 0, torch.ones_like(std), std).to(a.dtype)
