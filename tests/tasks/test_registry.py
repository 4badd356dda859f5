"""Task names (lightning_mbo.tasks.registry)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from dataclasses import MISSING

import pytest

from lightning_mbo.tasks import QUADRATIC, TASKS, Task, TaskSpec, UnknownTaskError, get_spec, registry

DESIGN_BENCH_TASKS = [
    "TFBind8-Exact-v0", "TFBind10-Exact-v0", "Superconductor-RandomForest-v0", "AntMorphology-Exact-v0",
    "DKittyMorphology-Exact-v0", "HopperController-Exact-v0", "GFP-Transformer-v0", "UTR-ResNet-v0",
]


def test_unknown_task_lists_every_known_task():
    with pytest.raises(UnknownTaskError) as err:
        get_spec("TFBind9-Exact-v0")
    message = str(err.value)
    assert "'TFBind9-Exact-v0'" in message
    for name in [*DESIGN_BENCH_TASKS, QUADRATIC]:
        assert name in message
    # A ValueError, so argument parsers and callers that catch ValueError see it.
    assert isinstance(err.value, ValueError)


def test_task_with_unknown_name_raises_before_reading_data(tmp_path):
    with pytest.raises(UnknownTaskError, match="known tasks: .*TFBind8-Exact-v0"):
        Task("tfbind8", data_dir=tmp_path)


@pytest.mark.parametrize("name", DESIGN_BENCH_TASKS)
def test_design_bench_tasks_are_registered(name):
    assert get_spec(name).name == name


@pytest.mark.parametrize("name", sorted(TASKS))
def test_score_range_is_increasing(name):
    spec = TASKS[name]
    if spec.y_min is not None and spec.y_max is not None:
        assert spec.y_min < spec.y_max
    assert 0 <= spec.min_percentile < spec.max_percentile <= 100
    if spec.discrete:
        assert spec.num_classes is not None and spec.num_classes >= 2


# The visible split (min_percentile, max_percentile) of each task as design-bench 2.0.20's
# design_bench/__init__.py registers it (``dataset_kwargs`` of ``register(...)``), e.g.
#   register('UTR-ResNet-v0', 'design_bench.datasets.discrete.utr_dataset:UTRDataset', ...,
#            dataset_kwargs=dict(max_samples=None, distribution=None, max_percentile=50, min_percentile=0), ...)
# and the full-dataset score range design-bench normalises with (min and max of all shards).
@pytest.mark.parametrize(
    ("name", "y_min", "y_max", "lo", "hi", "oracle"),
    [
        ("TFBind8-Exact-v0", 0.0, 1.0, 0, 50, "exact"),
        ("TFBind10-Exact-v0", -1.8585268, 2.1287067, 0, 50, "exact"),
        ("Superconductor-RandomForest-v0", 0.00021, 185.0, 0, 80, "random_forest"),
        ("AntMorphology-Exact-v0", -386.90036, 590.24445, 0, 40, "mujoco"),
        ("DKittyMorphology-Exact-v0", -880.4585, 340.90985, 0, 40, "mujoco"),
        ("HopperController-Exact-v0", 87.93491, 1361.6106, 0, 100, "design_bench"),
        ("GFP-Transformer-v0", 1.2834193, 4.123109, 50, 60, "design_bench"),
        ("UTR-ResNet-v0", 0.0, 12.0, 0, 50, "design_bench"),
    ],
)
def test_spec_constants_match_design_bench_registration(name, y_min, y_max, lo, hi, oracle):
    spec = get_spec(name)
    assert (spec.y_min, spec.y_max) == (y_min, y_max)
    assert (spec.min_percentile, spec.max_percentile) == (lo, hi)
    assert spec.oracle == oracle


def test_oracle_files_where_design_bench_reads_them():
    # ApproximateOracle.get_disk_resource: "{dataset.name}/{oracle.name}.zip" with dataset.name
    # "superconductor/superconductor"; the morphology oracles' DiskResource("<folder>/<robot>_oracle.pkl").
    assert get_spec("Superconductor-RandomForest-v0").oracle_file == "superconductor/random_forest.zip"
    assert get_spec("AntMorphology-Exact-v0").oracle_file == "ant_oracle.pkl"
    assert get_spec("DKittyMorphology-Exact-v0").oracle_file == "dkitty_oracle.pkl"


def test_tfbind_layout_and_best_visible():
    t8, t10 = get_spec("TFBind8-Exact-v0"), get_spec("TFBind10-Exact-v0")
    assert (t8.folder, t8.prefix, t8.num_classes, t8.best_visible) == ("tf_bind_8-SIX6_REF_R1", "tf_bind_8", 4, 0.439)
    assert (t10.folder, t10.prefix, t10.num_classes, t10.best_visible) == ("tf_bind_10-pho4", "tf_bind_10", 4, 0.467)
    assert get_spec("GFP-Transformer-v0").max_samples == 5000


@pytest.mark.parametrize("name", DESIGN_BENCH_TASKS)
def test_full_dataset_size_where_known(name):
    # The continuous tasks' shard files: SUPERCONDUCTOR_FILES (5), ANT_MORPHOLOGY_FILES and
    # DKITTY_MORPHOLOGY_FILES (1 each) in design_bench/datasets/continuous/*_dataset.py.
    known = {"TFBind8-Exact-v0": (1, 65_792), "TFBind10-Exact-v0": (84, 8_321_066),
             "Superconductor-RandomForest-v0": (5, None), "AntMorphology-Exact-v0": (1, None),
             "DKittyMorphology-Exact-v0": (1, None)}
    spec = get_spec(name)
    assert (spec.num_shards, spec.num_rows) == known.get(name, (None, None))


def test_registry_entries_name_every_field():
    # Eleven positional values are easy to shift by one; every entry spells its field names.
    tree = ast.parse(inspect.getsource(registry))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "TaskSpec"]
    assert len(calls) == len(DESIGN_BENCH_TASKS)
    for call in calls:
        assert not call.args
        assert {k.arg for k in call.keywords} >= {f.name for f in dataclasses.fields(TaskSpec) if f.default is MISSING}
    assert get_spec(QUADRATIC).num_shards is None and get_spec(QUADRATIC).num_rows is None
