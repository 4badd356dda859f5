"""Oracles: the true objective, called once on the final designs.

Each oracle comes with its provenance for ``results.json`` (``Task.oracle_info``): ``kind``
(``exact``, ``random_forest``, ``random_forest_refit``, ``mujoco_port``, ``design_bench``,
``closed_form``), a ``description``, ``canonical`` (built from design-bench's own data and oracle
files, so comparable with published scores; false for a local refit) and ``ported`` (design-bench's
computation reimplemented here rather than run by design-bench or the library it used), plus its files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np


class Oracle(Protocol):
    """Scores raw designs: ``(n, ...)`` in the task's representation -> ``(n,)`` float."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class DesignNotFoundError(KeyError):
    """A design that an exact (lookup) oracle has no score for."""


class MissingDependencyError(RuntimeError):
    """An oracle whose package is not installed (the message names the ``pip install``)."""


class DesignBenchOracle:
    """The oracle of a design-bench task whose oracle is a model or simulator.

    ``design_bench`` is imported only when this oracle is built.
    """

    def __init__(self, task_name: str) -> None:
        try:
            import design_bench  # noqa: PLC0415
        except Exception as err:  # its import fails in many ways on current Python
            raise MissingDependencyError(
                f"task {task_name} is scored by design-bench's own oracle (a model or simulator), and "
                f"`import design_bench` failed: {err!r}. Install it with `pip install 'lightning_mbo[design-bench]'` "
                "in an environment where it works (design-bench 2.0.20 with its task extras, e.g. MuJoCo for "
                "Hopper), with its data in its `design_bench_data` folder."
            ) from err
        self.task = design_bench.make(task_name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.task.predict(x), dtype=np.float32).reshape(-1)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, for an oracle's provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
