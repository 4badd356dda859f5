"""Exact oracles: the score of a design is looked up in the task's full dataset."""

from lightning_mbo.tasks.exact.oracle import ExactOracle

__all__ = ["ExactOracle"]
