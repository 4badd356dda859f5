"""What a search did, in the form :attr:`AscentResult.diagnostics` takes.

A list with one entry per candidate (in candidate order) is split by replicate in results; any
other value is copied to every row; ``flags`` (short strings) are shown next to the scores.
Searchers that run once per block of candidates (BO-qEI, REINFORCE, CbAS, MINs) report a block's
value on each of its candidates' entries, so every replicate's row carries its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def number(v: float) -> str:
    """``6,512`` from 100 up, else three significant digits (``0.873``, ``52``)."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def span(values: Sequence[float]) -> str:
    """``"52-79"`` (or ``"52"`` when all print alike) for a list of numbers."""
    lo, hi = number(min(values)), number(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def per_candidate(per_block: Sequence[Any], block: int) -> list[Any]:
    """Each block's value repeated over its ``block`` candidates."""
    return [value for value in per_block for _ in range(block)]


def rounded(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (for compact results)."""
    return float(f"{x:.{digits}g}")
