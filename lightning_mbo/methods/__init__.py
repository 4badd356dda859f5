"""LightningModules: surrogates (with the optional IGNITE constraint) and Tri-mentoring."""

from lightning_mbo.methods.ignite import GradNormConstraint, Ignite
from lightning_mbo.methods.surrogate import Surrogate

__all__ = ["GradNormConstraint", "Ignite", "Surrogate"]
