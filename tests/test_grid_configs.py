"""Every shipped grid (``configs/benchmarks/*.yaml``) is one the runner accepts: its config files exist,
its run names are distinct, its seeds give each job its own seeds, and a run that stacks seeds is of the
one class whose stacked replicates are proven to be plain runs. The full resolution of every run's config
is ``slow``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_mbo.benchmark import Run, _check_stackable, _fit_args, _seed_jobs, resolved_config

REPO = Path(__file__).resolve().parents[1]
GRIDS = sorted((REPO / "configs" / "benchmarks").glob("*.yaml"))


def _runs(path: Path) -> tuple[dict, list[Run]]:
    grid = yaml.safe_load(path.read_text())
    return grid, [Run(**run) for run in grid["runs"]]


def test_there_are_grids():
    assert len(GRIDS) >= 5


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.stem)
def test_grid_names_existing_configs_and_distinct_runs(path):
    grid, runs = _runs(path)
    names = [run.name for run in runs]
    assert len(set(names)) == len(names), f"{path.name}: a run name repeats"
    for run in runs:
        for config in run.configs:
            assert (REPO / config).is_file(), f"{path.name}: run {run.name} names a missing config {config}"
    assert grid.get("output_dir", "").startswith("benchmarks/results/") or "output_dir" not in grid
    seeds, replicates = grid.get("seeds", [0]), grid.get("replicates", 1)
    for run in runs:
        covered = [s + k for s, count in _seed_jobs(run, seeds, replicates) for k in range(count)]
        # every seed runs once: the grid's seeds, each with its replicates' seeds when it stacks per job
        assert sorted(covered) == sorted(seeds if run.stack else [s + k for s in seeds for k in range(replicates)])


STACKING = [p for p in GRIDS if any(r.get("stack") for r in yaml.safe_load(p.read_text())["runs"])]


@pytest.mark.parametrize("path", STACKING, ids=lambda p: p.stem)
def test_stacked_runs_are_of_the_class_proven_to_stack(path, tmp_path):
    grid, runs = _runs(path)
    for run in (r for r in runs if r.stack):
        resolved = resolved_config(_fit_args(run, grid["seeds"][0], tmp_path / run.name, grid.get("args"),
                                             len(grid["seeds"])))
        _check_stackable(run, resolved)
        data = yaml.safe_load(resolved)["data"]
        assert not data.get("max_samples") or data.get("subsample") != "random", (
            f"{path.name}: run {run.name} stacks seeds of a random subsample (each seed draws its own rows)")


@pytest.mark.slow
@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.stem)
def test_every_run_of_a_grid_resolves(path, tmp_path):
    grid, runs = _runs(path)
    for run in runs:
        for seed, count in _seed_jobs(run, grid.get("seeds", [0]), grid.get("replicates", 1)):
            assert resolved_config(_fit_args(run, seed, tmp_path / run.name, grid.get("args"), count))
