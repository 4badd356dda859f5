"""The Ant / D'Kitty morphology oracle's entry point: the policy file, the lazy MuJoCo import, the provenance.

Importing this module needs neither ``mujoco`` nor the port (:mod:`lightning_mbo.tasks.morphology.rollout`):
a missing file or package becomes an error that names its fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lightning_mbo.tasks.io import MissingDataError
from lightning_mbo.tasks.oracles import MissingDependencyError, Oracle, file_sha256


def morphology_oracle(task_name: str, policy: Path, root: Path) -> tuple[Oracle, dict[str, Any]]:
    """Ant / D'Kitty morphology: design-bench's saved policy rolled out on each design's robot, with
    the rollout ported to the ``mujoco`` package (:mod:`lightning_mbo.tasks.morphology.rollout`), and its provenance.

    Args:
        task_name: ``AntMorphology-Exact-v0`` or ``DKittyMorphology-Exact-v0``.
        policy: design-bench's ``<robot>_oracle.pkl``.
        root: the data directory (for the download command in messages).

    Raises:
        MissingDataError: the policy file is missing (naming the command that downloads it).
        MissingDependencyError: the MuJoCo port or the ``mujoco`` package is not installed.
    """
    if not policy.is_file():
        raise MissingDataError(
            f"{task_name} is scored by rolling out design-bench's saved policy {policy}, which is missing; download "
            f"it with: python -m lightning_mbo data download {task_name} --data_dir {root}")
    try:
        from lightning_mbo.tasks.morphology.rollout import MorphologyOracle  # noqa: PLC0415
    except ImportError as err:
        raise MissingDependencyError(
            f"{task_name}'s oracle rolls out MuJoCo, which could not be imported ({err}); install it with "
            "pip install 'lightning_mbo[continuous]'") from err
    oracle = MorphologyOracle(task_name, policy)

    def score(x: np.ndarray) -> np.ndarray:
        return np.asarray(oracle(np.asarray(x, dtype=np.float32)), dtype=np.float32).reshape(-1)

    info = {"kind": "mujoco_port", "canonical": True, "ported": True, "file": str(policy),
            "sha256": file_sha256(policy),
            "description": "design-bench's saved policy rolled out on each design's robot, ported from mujoco_py and "
                           "morphing-agents to the mujoco package (lightning_mbo.tasks.morphology): validate it with "
                           f"python -m lightning_mbo data check {task_name}"}
    return score, info
