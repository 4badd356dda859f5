"""Design search: the contract a method offers it, and optimizers over designs (plain torch)."""

from lightning_mbo.search.bo_qei import BOqEI
from lightning_mbo.search.cbas import CbAS
from lightning_mbo.search.cma_es import CMAES
from lightning_mbo.search.contract import (
    AscentOptimizer,
    Searchable,
    SearchData,
    Searcher,
    SearchObjective,
    SearchSettings,
    StepHook,
)
from lightning_mbo.search.gradient import AscentResult, GradientAscent, gradient_ascent
from lightning_mbo.search.mins import MINs
from lightning_mbo.search.reinforce import Reinforce

__all__ = [
    "AscentOptimizer",
    "AscentResult",
    "BOqEI",
    "CbAS",
    "CMAES",
    "GradientAscent",
    "MINs",
    "Reinforce",
    "SearchData",
    "SearchObjective",
    "SearchSettings",
    "Searchable",
    "Searcher",
    "StepHook",
    "gradient_ascent",
]
