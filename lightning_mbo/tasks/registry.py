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
        oracle: ``"exact"`` (lookup table over all rows), ``"random_forest"`` (design-bench's saved
            scikit-learn forest, scored natively: :mod:`lightning_mbo.tasks.forest`), ``"mujoco"``
            (design-bench's morphology rollouts, ported to the ``mujoco`` package:
            :mod:`lightning_mbo.tasks.morphology`), ``"design_bench"`` (the installed package's own
            model or simulator) or ``"closed_form"`` (synthetic tasks).
        best_visible: normalised best visible score D(best), where it is known.
        num_shards: how many shard pairs design-bench's full dataset has, where it is known;
            reading a folder with another number raises :class:`~lightning_mbo.tasks.io.BadDataError`.
        num_rows: rows of the full dataset (hidden rows included), where it is known; checked
            like ``num_shards``.
        oracle_file: the file the oracle is built from, relative to the task's folder, as
            design-bench names it (``random_forest`` and ``mujoco`` oracles).
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
    oracle: Literal["exact", "random_forest", "mujoco", "design_bench", "closed_form"]
    best_visible: float | None = None
    num_shards: int | None = None
    num_rows: int | None = None
    oracle_file: str | None = None


# Each entry: the name and design-bench's visible split (its ``dataset_kwargs``); where the shards
# live and what a design is; the full dataset's score range (design-bench's normalisation) and oracle; for the
# TFBind tasks D(best) and the full dataset's size (shards, rows), checked when the data is read. The continuous
# tasks' shard counts are their datasets' file lists (design_bench/datasets/continuous/*_dataset.py:
# SUPERCONDUCTOR_FILES, ANT_MORPHOLOGY_FILES, DKITTY_MORPHOLOGY_FILES); their oracle files are where
# design-bench reads them (ApproximateOracle.get_disk_resource: "{dataset.name}/{oracle.name}.zip";
# oracles/exact/{ant,dkitty}_morphology_oracle.py: "<folder>/<robot>_oracle.pkl").
_SPECS = [
    TaskSpec(name="TFBind8-Exact-v0", min_percentile=0, max_percentile=50, max_samples=None,
             folder="tf_bind_8-SIX6_REF_R1", prefix="tf_bind_8", discrete=True, num_classes=4,
             y_min=0.0, y_max=1.0, oracle="exact",
             best_visible=0.439, num_shards=1, num_rows=65_792),
    TaskSpec(name="TFBind10-Exact-v0", min_percentile=0, max_percentile=50, max_samples=None,
             folder="tf_bind_10-pho4", prefix="tf_bind_10", discrete=True, num_classes=4,
             y_min=-1.8585268, y_max=2.1287067, oracle="exact",
             best_visible=0.467, num_shards=84, num_rows=8_321_066),
    TaskSpec(name="Superconductor-RandomForest-v0", min_percentile=0, max_percentile=80, max_samples=None,
             folder="superconductor", prefix="superconductor", discrete=False, num_classes=None,
             y_min=0.00021, y_max=185.0, oracle="random_forest",
             num_shards=5, oracle_file="superconductor/random_forest.zip"),
    TaskSpec(name="AntMorphology-Exact-v0", min_percentile=0, max_percentile=40, max_samples=None,
             folder="ant_morphology", prefix="ant_morphology", discrete=False, num_classes=None,
             y_min=-386.90036, y_max=590.24445, oracle="mujoco",
             num_shards=1, oracle_file="ant_oracle.pkl"),
    TaskSpec(name="DKittyMorphology-Exact-v0", min_percentile=0, max_percentile=40, max_samples=None,
             folder="dkitty_morphology", prefix="dkitty_morphology", discrete=False, num_classes=None,
             y_min=-880.4585, y_max=340.90985, oracle="mujoco",
             num_shards=1, oracle_file="dkitty_oracle.pkl"),
    TaskSpec(name="HopperController-Exact-v0", min_percentile=0, max_percentile=100, max_samples=None,
             folder="hopper_controller", prefix="hopper_controller", discrete=False, num_classes=None,
             y_min=87.93491, y_max=1361.6106, oracle="design_bench"),
    TaskSpec(name="GFP-Transformer-v0", min_percentile=50, max_percentile=60, max_samples=5000,
             folder="gfp", prefix="gfp", discrete=True, num_classes=20,
             y_min=1.2834193, y_max=4.123109, oracle="design_bench"),
    TaskSpec(name="UTR-ResNet-v0", min_percentile=0, max_percentile=50, max_samples=None,
             folder="utr", prefix="utr", discrete=True, num_classes=4,
             y_min=0.0, y_max=12.0, oracle="design_bench"),
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
