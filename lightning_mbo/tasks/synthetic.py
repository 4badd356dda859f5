"""A small continuous task with a closed-form oracle, for tests of the continuous path.

``f(x) = -||x - c||^2`` with ``c = 0.5 * ones(D)``: the optimum is 0 at ``c``. The dataset is
drawn uniformly from ``[-2, 2]^D`` with a fixed seed, so it is the same on every machine.
"""

from __future__ import annotations

import numpy as np

from lightning_mbo.tasks.registry import TaskSpec, register

QUADRATIC = "Synthetic-Quadratic-v0"
QUADRATIC_DIM = 6
QUADRATIC_ROWS = 4096


def quadratic_oracle(x: np.ndarray) -> np.ndarray:
    """``-||x - 0.5||^2`` per row: ``(n, D)`` -> ``(n,)`` float32."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != QUADRATIC_DIM:
        raise ValueError(f"{QUADRATIC} designs have shape (n, {QUADRATIC_DIM}), got {x.shape}")
    return (-((x - 0.5) ** 2).sum(axis=1)).astype(np.float32)


def quadratic_data() -> tuple[np.ndarray, np.ndarray]:
    """The task's full dataset: ``(4096, 6)`` float32 designs and their scores."""
    x = np.random.default_rng(20240101).uniform(-2.0, 2.0, (QUADRATIC_ROWS, QUADRATIC_DIM)).astype(np.float32)
    return x, quadratic_oracle(x)


SYNTHETIC = {QUADRATIC: (quadratic_data, quadratic_oracle)}

_y = quadratic_data()[1]
register(TaskSpec(name=QUADRATIC, min_percentile=0, max_percentile=50, max_samples=None,
                  folder="", prefix="", discrete=False, num_classes=None,
                  y_min=float(_y.min()), y_max=float(_y.max()), oracle="closed_form"))
del _y
