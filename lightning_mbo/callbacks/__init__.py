"""Callbacks: design ascent and oracle scoring at the end of fitting."""

from lightning_mbo.callbacks.design_ascent import DesignAscent

__all__ = ["DesignAscent"]
