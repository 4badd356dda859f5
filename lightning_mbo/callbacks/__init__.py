"""Callbacks: design search and oracle scoring at the end of fitting; a checkpoint on interrupt."""

from lightning_mbo.callbacks.design_ascent import DesignAscent
from lightning_mbo.callbacks.preemption import CheckpointOnInterrupt

__all__ = ["CheckpointOnInterrupt", "DesignAscent"]
