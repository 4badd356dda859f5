"""Ant and D'Kitty morphology oracles: design-bench's saved policy rolled out on each design's robot.

:mod:`~lightning_mbo.tasks.morphology.oracle` is the entry point and needs no MuJoCo; the port itself is
:mod:`~lightning_mbo.tasks.morphology.rollout` (rollouts over worker processes), ``env`` (the two
environments), ``policy`` (the saved policy) and ``mjcf_ant`` / ``mjcf_dkitty`` (the robots' models).
"""

from lightning_mbo.tasks.morphology.oracle import morphology_oracle

__all__ = ["morphology_oracle"]
