"""Grids of runs (methods x seeds) and the table they make.

``python -m lightning_mbo benchmark --config configs/benchmarks/<name>.yaml`` runs every method
config for every seed through the same ``fit`` entry point as a single run, skips runs whose
``results.json`` already exists, and writes the grid's table (:mod:`lightning_mbo.table`).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import CLI

from lightning_mbo.dispatch import Executor, FitJob, read_job, run_jobs
from lightning_mbo.fit import resolved_config
from lightning_mbo.results import load_rows
from lightning_mbo.table import (  # the table's names, where the runner's users have always found them
    PUBLISHED,
    collect,
    collect_main,
    format_table,
    read_runs,
    summarize,
    write_table,
)
from lightning_mbo.validation import SettingsError, check_range

__all__ = ["PUBLISHED", "Run", "collect", "collect_main", "format_table", "main", "read_runs", "resolved_config",
           "run_grid", "summarize", "write_table"]


@dataclass
class Run:
    """One method of the grid.

    Attributes:
        name: folder name of its runs.
        configs: config files, applied in order (e.g. the method's, then an overlay).
        args: extra command-line arguments for this method.
        stack: run the grid's seeds (consecutive, ``s .. s + N - 1``) as ONE job, stacked as a batch
            dimension (``model.init_args.replicates = N``; replicate ``k`` is the run of seed ``s + k``).
            Only for ``lightning_mbo.methods.Surrogate`` (GA, Ens-Mean/Min, and CMA-ES, BO-qEI,
            REINFORCE, CbAS, MINs on its members), whose replicates are proven equal to plain runs;
            other methods run their seeds as separate jobs.
    """

    name: str
    configs: list[str]
    args: list[str] = field(default_factory=list)
    stack: bool = False


def run_grid(
    runs: list[Run],
    seeds: list[int],
    output_dir: str = "logs/benchmark",
    args: list[str] | None = None,
    replicates: int = 1,
    label: str = "",
    rerun_changed: bool = False,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Run every method for every seed and write the table.

    Args:
        runs: the methods.
        seeds: the seeds; each sets ``seed_everything`` and the datamodule's seed.
        output_dir: runs go to ``<output_dir>/<name>/seed_<s>/``, the table to ``<output_dir>/``.
        args: extra command-line arguments for every run (e.g. ``--trainer.accelerator=gpu``).
        replicates: seeds stacked in ONE process per method and seed ``s``
            (``model.init_args.replicates``): the job of seed ``s`` runs seeds ``s .. s + R - 1``, one
            results row each, labelled with its own seed (the seeds' ranges must not overlap).
        label: a line printed under the table's title (e.g. "quick CPU scale").
        rerun_changed: a finished run whose resolved config differs from what the grid now asks
            for (a config file or an argument changed) is run again; without it the grid refuses,
            naming the run and the first difference.
        executor: where the runs execute (:class:`~lightning_mbo.dispatch.Executor`: this machine
            with ``workers`` runs at once, or SLURM); every run is its own submitit job, and an
            interrupted run resumes from its ``last.ckpt``.

    Returns:
        One row per finished run (per replicate).

    Each run's folder keeps ``grid_job.json``: its command line, its fully resolved config (what
    ``fit --print_config`` prints, the key a finished run is reused by) and its start and end times.
    """
    check_range("replicates", replicates, 1)
    executor = executor or Executor()
    out = Path(output_dir)
    planned, pending = [], []
    for run in runs:
        for seed, count in _seed_jobs(run, seeds, replicates):
            run_dir = out / run.name / f"seed_{seed}"
            cli_args = _fit_args(run, seed, run_dir, args, count)
            resolved = resolved_config(cli_args)
            if run.stack:
                _check_stackable(run, resolved)
            result_file = run_dir / "results.json"
            if result_file.exists() and _changed(run_dir, resolved, rerun_changed):
                result_file.unlink()
            if not result_file.exists():
                pending.append(FitJob(cli_args, str(run_dir), resolved))
            planned.append((run, seed, result_file))
    print(f"benchmark grid: {len(planned)} runs, {len(pending)} to run on {executor.cluster}", file=sys.stderr)
    run_jobs(pending, executor, out / "submitit")
    rows: list[dict[str, Any]] = []
    for run, seed, result_file in planned:
        rows += [{**row, "run": run.name, "seed": row.get("seed", seed)} for row in load_rows(result_file)]
    span = _wall_time([result_file.parent for _, _, result_file in planned])
    write_table(rows, out, f"{label}\n\n{span}" if label and span else label or span)
    return rows


def _wall_time(run_dirs: list[Path]) -> str:
    """``grid wall time: ...`` from the first run's start to the last run's end (their ``grid_job.json``)."""
    jobs = [read_job(d) for d in run_dirs]
    times = [(j["started"], j["finished"]) for j in jobs if "started" in j]
    if not times:
        return ""
    seconds = max(t[1] for t in times) - min(t[0] for t in times)
    return (f"grid wall time: {seconds / 60:.0f} min from the first run's start to the last run's end "
            f"({len(times)} of {len(run_dirs)} runs timed; a grid resumed later counts the pause)")


def _seed_jobs(run: Run, seeds: list[int], replicates: int) -> list[tuple[int, int]]:
    """``(first seed, seeds stacked)`` of each job of ``run``: one job of all seeds when it stacks, else one
    job per seed of ``replicates`` stacked seeds; no seed runs twice."""
    if run.stack:
        if replicates > 1 or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            raise SettingsError(f"run {run.name} stacks the grid's seeds into one job: give consecutive seeds "
                                f"(got {seeds}) and leave replicates at 1 (got {replicates})")
        return [(seeds[0], len(seeds))]
    covered = [s + k for s in seeds for k in range(replicates)]
    if len(set(covered)) < len(covered):
        raise SettingsError(f"with replicates {replicates} the job of seed s runs seeds s .. s + {replicates - 1}, so "
                            f"seeds {seeds} run some seed twice: give seeds {replicates} apart")
    return [(s, replicates) for s in seeds]


def _check_stackable(run: Run, resolved: str) -> None:
    """Refuse to stack seeds of a method whose replicates are not proven to be plain runs."""
    try:
        config = yaml.safe_load(resolved)
    except yaml.YAMLError:
        return
    model = config.get("model") if isinstance(config, dict) else None
    path = model.get("class_path") if isinstance(model, dict) else None
    if path is not None and not stacks_seeds(path):
        raise SettingsError(f"run {run.name}: {path} does not stack seeds as a batch dimension (its class does not "
                            "declare stacks_seeds: its replicates are not proven to be plain runs of their seeds); "
                            "set stack: false and replicates 1 to run each seed as its own job")


def stacks_seeds(class_path: str) -> bool:
    """Whether the method a config's ``class_path`` names declares that its seeds stack (``stacks_seeds``:
    replicate k is the plain run of seed s + k); False for a class that does not import."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return bool(getattr(cls, "stacks_seeds", False))


def _fit_args(run: Run, seed: int, run_dir: Path, args: list[str] | None, replicates: int) -> list[str]:
    """The ``fit`` command line of one run of the grid."""
    cli_args = ["fit"]
    for cfg in run.configs:
        cli_args += ["--config", cfg]
    cli_args += [
        *run.args, *(args or []),
        f"--seed_everything={seed}", f"--data.seed={seed}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.logger.init_args.name=", "--trainer.logger.init_args.version=",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]
    if replicates > 1:
        cli_args.append(f"--model.init_args.replicates={replicates}")
    return cli_args


def _changed(run_dir: Path, resolved: str, rerun: bool) -> bool:
    """Whether the finished run in ``run_dir`` was made by another config than ``resolved``; raises
    unless ``rerun`` when it was."""
    saved = read_job(run_dir).get("resolved", "")
    if saved == resolved:
        return False
    old, new = saved.splitlines(), resolved.splitlines()
    first = next((f"'{a.strip()}' is now '{b.strip()}'" for a, b in zip(old, new, strict=False) if a != b),
                 "no record of its config" if not old else "lines were added or removed")
    if not rerun:
        raise SettingsError(f"{run_dir} holds a finished run of another config ({first}): pass --rerun_changed "
                            "true to run it again, or delete the folder")
    return True


def main(args: list[str] | None = None) -> int:
    """``python -m lightning_mbo benchmark --config configs/benchmarks/<name>.yaml``; a usage error
    exits 2."""
    CLI(run_grid, args=args, as_positional=False)
    return 0
