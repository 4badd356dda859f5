"""Design-bench task names and what each one means (design-bench 2.0.20 semantics).

A :class:`TaskSpec` says where a task's shards live, whether designs are discrete, how the
visible split is cut, and the full-dataset score range used to normalise oracle scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class UnknownTaskError(ValueError):
    """A task name that is not in the registry."""


@dataclass(frozen=True)
class TaskSpec:
    """One design-bench task.

    Attributes:
        name: the design-bench name, e.g. ``"TFBind8-Exact-v0"``.
        folder: the dataset folder under the data directory.
        prefix: shard file prefix: shards are ``{prefix}-x-{i}.npy`` / ``{prefix}-y-{i}.npy``.
        discrete: designs are integer sequences (encoded as logits for training).
        num_classes: alphabet size of a discrete task.
        min_percentile: lower end of the visible split (0 = no lower bound).
        max_percentile: upper end of the visible split (100 = no upper bound).
        max_samples: design-bench's default subsample of the visible rows, if any.
        y_min: minimum score over the FULL dataset (hidden rows included).
        y_max: maximum score over the FULL dataset.
        oracle: ``"exact"`` (lookup table over all rows), ``"design_bench"`` (the
            package's own model or simulator) or ``"closed_form"`` (synthetic tasks).
        best_visible: normalised best visible score D(best), where it is known.
    """

    name: str
    folder: str
    prefix: str
    discrete: bool
    num_classes: int | None
    min_percentile: float
    max_percentile: float
    max_samples: int | None
    y_min: float | None
    y_max: float | None
    oracle: Literal["exact", "design_bench", "closed_form"]
    best_visible: float | None = None


# Score ranges: design-bench's full datasets (METHODS.md 1.2).
_SPECS = [
    TaskSpec("TFBind8-Exact-v0", "tf_bind_8-SIX6_REF_R1", "tf_bind_8", True, 4, 0, 50, None, 0.0, 1.0,
             "exact", 0.439),
    TaskSpec("TFBind10-Exact-v0", "tf_bind_10-pho4", "tf_bind_10", True, 4, 0, 50, None,
             -1.8585268, 2.1287067, "exact", 0.467),
    TaskSpec("Superconductor-RandomForest-v0", "superconductor", "superconductor", False, None, 0, 80, None,
             0.00021, 185.0, "design_bench"),
    TaskSpec("AntMorphology-Exact-v0", "ant_morphology", "ant_morphology", False, None, 0, 40, None,
             -386.90036, 590.24445, "design_bench"),
    TaskSpec("DKittyMorphology-Exact-v0", "dkitty_morphology", "dkitty_morphology", False, None, 0, 40, None,
             -880.4585, 340.90985, "design_bench"),
    TaskSpec("HopperController-Exact-v0", "hopper_controller", "hopper_controller", False, None, 0, 100, None,
             87.93491, 1361.6106, "design_bench"),
    TaskSpec("GFP-Transformer-v0", "gfp", "gfp", True, 20, 50, 60, 5000, 1.2834193, 4.123109, "design_bench"),
    TaskSpec("UTR-ResNet-v0", "utr", "utr", True, 4, 0, 50, None, 0.0, 12.0, "design_bench"),
]

TASKS: dict[str, TaskSpec] = {s.name: s for s in _SPECS}


def register(spec: TaskSpec) -> None:
    """Add a task to the registry (synthetic tasks, user tasks in design-bench's layout)."""
    TASKS[spec.name] = spec


def get_spec(name: str) -> TaskSpec:
    """Look a task up by name; an unknown name lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known}") from None
