"""LightningModules: surrogates (with the optional IGNITE constraint), COMs, RoMA, ICT and Tri-mentoring."""

from lightning_mbo.methods.coms import COMs
from lightning_mbo.methods.ict import ICT
from lightning_mbo.methods.ignite import GradNormConstraint, Ignite
from lightning_mbo.methods.roma import RoMA
from lightning_mbo.methods.surrogate import Surrogate
from lightning_mbo.methods.tri_mentoring import TriMentoring

__all__ = ["COMs", "GradNormConstraint", "ICT", "Ignite", "RoMA", "Surrogate", "TriMentoring"]
