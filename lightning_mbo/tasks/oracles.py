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
from typing import Any, Protocol

import numpy as np

from lightning_mbo.tasks.io import MissingDataError


class Oracle(Protocol):
    """Scores raw designs: ``(n, ...)`` in the task's representation -> ``(n,)`` float."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class DesignNotFoundError(KeyError):
    """A design that an exact (lookup) oracle has no score for."""


class MissingDependencyError(RuntimeError):
    """An oracle whose package is not installed (the message names the ``pip install``)."""


class ExactOracle:
    """Lookup table over every row of a discrete task's full dataset.

    Designs are keyed by their base-C integer value; where a design occurs several times
    the LAST occurrence in shard order wins, as in design-bench's exact oracles. Lookup is
    one ``np.searchsorted`` over the sorted keys: no Python loop over designs.

    Args:
        x: ``(N, L)`` integer designs of the full dataset, in shard order.
        y: ``(N,)`` their scores.
        num_classes: alphabet size ``C``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
        if x.ndim != 2:
            raise ValueError(f"ExactOracle expects (N, L) integer designs, got shape {x.shape}")
        length = x.shape[1]
        if length * np.log2(num_classes) > 62:
            raise ValueError(f"designs of length {length} over {num_classes} classes do not fit an int64 key")
        self.num_classes = num_classes
        self.length = length
        keys = self._keys(x)
        # np.unique keeps the FIRST index of each key; on the reversed keys that is the last occurrence.
        rev_keys, rev_first = np.unique(keys[::-1], return_index=True)
        self._keys_sorted = rev_keys
        self._values = np.asarray(y, dtype=np.float32).reshape(-1)[::-1][rev_first]

    def _keys(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.length:
            raise ValueError(f"expected designs of shape (n, {self.length}), got {x.shape}")
        # Horner's rule column by column: no (n, L) int64 temporary (665 MB for TFBind10).
        keys = np.zeros(len(x), dtype=np.int64)
        for col in range(self.length):
            keys *= self.num_classes
            keys += x[:, col]
        return keys

    def __len__(self) -> int:
        return len(self._keys_sorted)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        # A fractional design must not be truncated to a neighbour (2.9 -> design 2).
        if not np.issubdtype(x.dtype, np.integer):
            if not np.array_equal(x, np.round(x)):
                raise DesignNotFoundError(f"designs must be integers in [0, {self.num_classes}), got fractions")
            x = x.astype(np.int64)  # integral floats (e.g. 2.0) are the designs they name
        if x.size and (x.min() < 0 or x.max() >= self.num_classes):
            raise DesignNotFoundError(f"designs must be integers in [0, {self.num_classes})")
        keys = self._keys(x)
        pos = np.searchsorted(self._keys_sorted, keys).clip(max=len(self._keys_sorted) - 1)
        missing = self._keys_sorted[pos] != keys
        if missing.any():
            rows = np.flatnonzero(missing)
            raise DesignNotFoundError(
                f"{len(rows)} designs are not in the oracle's table (first: {x[rows[0]].tolist()}); "
                "an exact oracle scores only designs of the full dataset"
            )
        return self._values[pos]


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def morphology_oracle(task_name: str, policy: Path, root: Path) -> tuple[Oracle, dict[str, Any]]:
    """Ant / D'Kitty morphology: design-bench's saved policy rolled out on each design's robot, with
    the rollout ported to the ``mujoco`` package (:mod:`lightning_mbo.tasks.morphology`), and its provenance.

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
        from lightning_mbo.tasks.morphology import MorphologyOracle  # noqa: PLC0415
    except ImportError as err:
        raise MissingDependencyError(
            f"{task_name}'s oracle rolls out MuJoCo, which could not be imported ({err}); install it with "
            "pip install 'lightning_mbo[continuous]'") from err
    oracle = MorphologyOracle(task_name, policy)

    def score(x: np.ndarray) -> np.ndarray:
        return np.asarray(oracle(np.asarray(x, dtype=np.float32)), dtype=np.float32).reshape(-1)

    info = {"kind": "mujoco_port", "canonical": True, "ported": True, "file": str(policy), "sha256": _sha256(policy),
            "description": "design-bench's saved policy rolled out on each design's robot, ported from mujoco_py and "
                           "morphing-agents to the mujoco package (lightning_mbo.tasks.morphology): validate it with "
                           f"python -m lightning_mbo data check {task_name}"}
    return score, info
