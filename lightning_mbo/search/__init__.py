"""Design search: the contract a method offers it, and optimizers over designs (plain torch)."""

from lightning_mbo.search.contract import (
    AscentOptimizer,
    Searchable,
    SearchData,
    SearchObjective,
    SearchSettings,
    StepHook,
)
from lightning_mbo.search.gradient import AscentResult, gradient_ascent

__all__ = [
    "AscentOptimizer",
    "AscentResult",
    "SearchData",
    "SearchObjective",
    "SearchSettings",
    "Searchable",
    "StepHook",
    "gradient_ascent",
]
