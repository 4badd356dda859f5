"""LightningModules: surrogates (with the optional IGNITE constraint) and Tri-mentoring."""

from lightning_mbo.methods.coms import COMs
from lightning_mbo.methods.ignite import GradNormConstraint, Ignite
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.methods.trimentoring import TriMentoring

__all__ = ["COMs", "GradNormConstraint", "Ignite", "Surrogate", "TriMentoring"]
