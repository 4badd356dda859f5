"""Scoring arbitrary points as one replicate's candidates.

A method's score function maps ``(C, D)`` designs to ``(C,)`` scores with row ``i`` scored as
candidate ``i`` (so stacked replicates score their own candidates with their own members).
Searchers that propose their own points (BO-qEI, REINFORCE) score them by writing them into the
rows of the block of candidates they search for, ``block`` rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def block_scorer(score: Callable[[Tensor], Tensor], x0: Tensor, start: int, block: int) -> Callable[[Tensor], Tensor]:
    """A score function ``(P, D) -> (..., P)`` for any number ``P`` of points, each scored as one of
    the candidates ``start .. start + block - 1`` of ``x0`` (``(C, D)``); ``score`` maps ``(C, D)``
    to ``(..., C)`` (a score ``(C,)``, or a predictive ``(2, K, C)``)."""

    def scored(points: Tensor) -> Tensor:
        out = []
        for chunk in points.to(x0).split(block):
            batch = x0.detach().clone()
            batch[start:start + len(chunk)] = chunk
            out.append(score(batch)[..., start:start + len(chunk)])
        return torch.cat(out, dim=-1) if out else points.new_zeros(0)

    return scored


def blocks(c: int, block: int, name: str) -> range:
    """The starts of the blocks of ``block`` candidates in ``c`` rows; an error if they do not tile."""
    if c % block:
        raise ValueError(f"{name} needs whole blocks of {block} candidates per process, got {c}: run it on one "
                         "process (--trainer.devices 1)")
    return range(0, c, block)
