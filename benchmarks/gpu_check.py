"""One-call GPU check of the published table: TFBind8 and TFBind10 at the released settings, 16 seeds.

What runs, in this order (the most valuable cells first; every finished cell is written at once):

1. TFBind8 Ens-Mean and Ens-Min, without and with IGNITE: one fit per mode (5 members x 16 seeds as
   replicates of ONE stacked module), then two searches of the same trained members (``fit`` with the
   Ens-Mean config, ``ascend`` with the Ens-Min config on its ``last.ckpt``): only the aggregation differs.
2. The same on TFBind10, one fit per seed: its released settings draw a random 10,000-row subsample
   per seed, which one stacked module cannot stand for (the framework refuses it).
3. Gradient ascent (GA), without and with IGNITE, TFBind8 then TFBind10.
4. COMs, without and with IGNITE, 16 seeds stacked (``COMs`` takes ``replicates``), TFBind8 then TFBind10.
5. Tri-mentoring on TFBind8, one seed, end to end, ``--model.init_args.outer_precision=tf32`` (torch
   1.7-1.11 and TensorFlow >= 2.4 ran float32 matmuls as TF32 on Ampere by default); whole-run time.

Each cell is ``lightning_mbo.cli.main`` in this process (the benchmark runner's ``fit`` command line,
:func:`lightning_mbo.benchmark._fit_args`), so every run leaves its usual ``results.json``; the table
is :func:`lightning_mbo.benchmark.write_table` (means, spreads, seeds, whole-run seconds per cell,
device, versions, and the with/without-IGNITE comparison of :mod:`lightning_mbo.comparison`), written
to ``<out>/table.md`` (and ``table.csv``, ``runs.csv``) after EVERY cell, with ``cells.json`` saying which
cells finished, how long each took and which were skipped and why. A global budget (``--budget``,
seconds) skips a cell whose estimate would not fit in what is left, so a time-out still returns the
cells that finished.

The device command (one call, 9 minutes; the packed TFBind10 copy is unpacked first, a few seconds):

  d=$(mktemp -d) && python $PACKED/unpack.py $d && \\
    timeout 540 python benchmarks/gpu_check.py --tfbind10-dir $d --budget 480 --out $OUT \\
    --runs-dir $d/runs --copy-to benchmarks/results/gpu_check

``$PACKED`` is the folder of the packed TFBind10 copy (its ``unpack.py`` writes design-bench's shards).
On another machine pass the folder holding ``tf_bind_10-pho4/`` (or set LIGHTNING_MBO_DATA_DIR).

CPU smoke run of the very same code path at tiny sizes (quick overlays, 2 replicates, 1 epoch of 3
batches, a 4**10-design TFBind10 stand-in in design-bench's layout when no data folder is given):

  python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check_smoke

Sizing (:func:`estimate_seconds`, per step the larger of a launch-bound floor and FLOPs at a rate):

- FLOPs from the shapes: a 2x2048 member on one-hot input (TFBind8 32 wide) does
  32*2048 + 2048*2048 + 2048*2 = 4.26 M multiply-adds per row forward, 6x that for forward and
  backward: 3.27 GFLOP per member step at batch 128 (torch.utils.flop_counter measured 3.25; IGNITE's
  finite difference 8.66, 2.67x). Ens (5 members x 16 seeds, 80 stacked): 260 GFLOP per step.
- Steps: TFBind8 32,696 training rows / 128 = 256 per epoch, 100 epochs = 25.5 k steps (6.6 PFLOP
  for Ens, 17.7 PFLOP for Ens+IGNITE); TFBind10 (10,000 rows sampled) 7.7 k steps.
- Measured on one H100 (benchmarks/README.md, ignite_step_time.py): the 2x2048 step is launch-bound
  at 2.06 / 2.54 ms plain (1 / 5 members), 5.55 / 6.02 ms IGNITE; Tri-mentoring's parts with tf32:
  120 s pre-training + 234 s ascent (taken as 360 s).
- ASSUMPTIONS (no GPU was available when this was sized): the stacked surrogate steps run in fp32 at
  36 TFLOP/s (the rate measured for Tri-mentoring's float32 outer pass, about half the H100's fp32
  peak); COMs' 50 inner ascent steps each cost a plain 1-member launch floor; 15 s per fit or
  search for data, start-up and scoring. ``--throughput`` changes the rate.
- Result, 16 seeds: TFBind8 Ens 214 s, Ens+IGNITE 522 s; TFBind10 (16 fits) 791 + 1217 s; GA 68 + 157 s (TFBind8),
  492 + 920 s (TFBind10); COMs 69 + 83 s, 497 + 506 s; Tri-mentoring 360 s: about 1.9 h in all. In one
  9-minute call (budget 480 s) the first pair runs with the most seeds that fit (9) and the rest
  is skipped with its reason, unless the device beats the estimate: the check measures by how much.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lightning_mbo.benchmark import Run, _fit_args, write_table  # noqa: E402
from lightning_mbo.results import load_rows, save_json  # noqa: E402

SEEDS = 16
MIN_SEEDS = 4
#: Visible training rows (less 200 validation) and one-hot width of each task at the released settings.
TASK_SHAPES = {"tfbind8": (32_696, 32), "tfbind10": (9_800, 40)}
#: Measured on one H100 (benchmarks/README.md, "Measured on one H100", ignite_step_time.py): per-member
#: matrix-product FLOPs of a 2x2048 step at batch 128 (torch.utils.flop_counter), and the launch-bound
#: floor of a step (wall ms at 1 and 5 members).
MEMBER_STEP_GFLOP = {"plain": 3.25, "fd": 8.66}
STEP_FLOOR_MS = {("plain", 1): 2.06, ("fd", 1): 5.55, ("plain", 5): 2.54, ("fd", 5): 6.02}
ASSUMED_TFLOPS = 36.0  # ASSUMPTION: fp32 rate of the stacked surrogate steps (measured for Tri-mentoring's outer pass)
FIXED_SECONDS = 15.0  # ASSUMPTION: data loading, start-up and search per fit or search
TRI_MENTORING_SECONDS = 360.0  # sum of measured H100 parts with tf32: 120 s pre-training + 234 s ascent
TASK_NAMES = {"tfbind8": "TFBind8-Exact-v0", "tfbind10": "TFBind10-Exact-v0"}


@dataclass
class Cell:
    """One fit (and, for Ens, a second search of the same members)."""

    task: str  # tfbind8 | tfbind10
    method: str  # config name under configs/<task>/
    members: int = 5
    replicates: int = SEEDS
    epochs: int = 100
    also_min: str | None = None  # config whose search (Ens-Min) reruns on this fit's checkpoint
    args: list[str] = field(default_factory=list)
    inner_steps: int = 0  # extra launch-bound passes per step (COMs' 50-step ascent of negatives)

    @property
    def name(self) -> str:
        return f"{self.task}_{self.method}"


def groups() -> list[list[Cell]]:
    """Every cell in the order it runs, most valuable first; a pair without and with IGNITE runs
    with the same number of seeds, planned together."""
    out: list[list[Cell]] = []
    for base, kw in (("ens_mean", {}), ("grad_ascent", {"members": 1}),
                     ("coms", {"members": 1, "epochs": 2, "inner_steps": 50})):
        for task in ("tfbind8", "tfbind10"):
            pair = []
            for ign in ("", "_ignite"):
                extra = {"also_min": f"ens_min{ign}"} if base == "ens_mean" else {}
                pair.append(Cell(task, f"{base}{ign}", **kw, **extra))
            out.append(pair)
    out.append([Cell("tfbind8", "tri_mentoring", members=3, replicates=1, epochs=200,
                     args=["--model.init_args.outer_precision=tf32"])])
    return out


def cells() -> list[Cell]:
    return [c for g in groups() for c in g]


def flops(cell: Cell) -> float:
    """Training matrix-product FLOPs of one cell (2x2048 members, batch 128, forward and backward)."""
    rows, _ = TASK_SHAPES[cell.task]
    mode = "fd" if "ignite" in cell.method else "plain"
    steps = rows / 128 * cell.epochs
    return MEMBER_STEP_GFLOP[mode] * 1e9 * (1 + cell.inner_steps * 2 / 3) * steps * cell.members * cell.replicates


def estimate_seconds(cell: Cell, tflops: float) -> float:
    """Expected whole-cell seconds on the device: per step the larger of its FLOPs at the assumed rate
    and the measured launch-bound floor (COMs: one plain floor per inner ascent step more), plus a
    fixed start-up and search time (twice for a cell that also searches Ens-Min)."""
    if cell.method.startswith("tri_mentoring"):
        return TRI_MENTORING_SECONDS
    rows, _ = TASK_SHAPES[cell.task]
    steps = rows / 128 * cell.epochs
    mode = "fd" if "ignite" in cell.method else "plain"
    floor = STEP_FLOOR_MS[(mode, 1 if cell.members == 1 else 5)] + cell.inner_steps * STEP_FLOOR_MS[("plain", 1)]
    fits = cell.replicates if cell.task == "tfbind10" else 1  # TFBind10: one fit per seed (see _run_cell)
    per_step = max(floor / 1e3, flops(cell) / fits / steps / (tflops * 1e12))
    return fits * (steps * per_step + FIXED_SECONDS * (2 if cell.also_min else 1))


def plan(group: list[Cell], left: float, tflops: float) -> str | None:
    """Set the group's seeds to the most (up to 16, at least MIN_SEEDS) whose estimate fits in ``left``
    seconds (the estimate's seconds: the caller divides what is left by measured / estimated so far);
    returns why it cannot run, or None."""
    if group[0].replicates == 1:
        need = sum(estimate_seconds(c, tflops) for c in group)
        return None if need <= left else f"estimate {need:.0f} s > {left:.0f} s left"
    for n in range(SEEDS, MIN_SEEDS - 1, -1):
        for c in group:
            c.replicates = n
        need = sum(estimate_seconds(c, tflops) for c in group)
        if need <= left:
            return None
    return f"estimate {need:.0f} s at {MIN_SEEDS} seeds > {left:.0f} s left"


def _run_cli(args: list[str]) -> None:
    from lightning_mbo.cli import main  # noqa: PLC0415

    main(args)


def _run_cell(cell: Cell, out: Path, extra: list[str], smoke: bool) -> list[dict]:
    """Fit (and for Ens also search with the min aggregation); returns the rows with ``run`` and ``seed``."""
    cfg = _configs(cell.task, cell.method)
    overlays = _smoke_overlays(cell) if smoke else []
    extra = [*extra, *(_smoke_args(cell) if smoke else [])]
    # One checkpoint, at the end (what Ens-Min's search loads): the configs' every 10 epochs would write
    # an 80-member stack (about 4 GB with Adam's moments) 10 times.
    every = 1 if smoke else cell.epochs
    ckpt = ('--trainer.callbacks=[{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", '
            f'"init_args": {{"save_last": true, "every_n_epochs": {every}}}}}]')
    run = Run(cell.name, [*cfg, *overlays], [*cell.args, *extra, ckpt])
    # TFBind10's released settings draw a random 10,000-row subsample per seed: one stacked module cannot
    # stand for several seeds there, so each seed is its own fit (seed s, replicates 1).
    stacked = cell.task != "tfbind10"
    plan_ = [(0, cell.replicates, out / cell.name)] if stacked else [
        (s, 1, out / cell.name / f"seed_{s}") for s in range(cell.replicates)]
    rows: list[dict] = []
    for seed, reps, run_dir in plan_:
        _run_cli(_fit_args(run, seed, run_dir, None, reps))
        rows += [{**r, "run": cell.name, "seed": seed} for r in load_rows(run_dir / "results.json")]
        if cell.also_min:
            name = f"{cell.task}_{cell.also_min}"
            min_cfg = _configs(cell.task, cell.also_min)
            min_dir = out / name / run_dir.relative_to(out / cell.name)
            min_run = Run(name, [*min_cfg, *overlays], [*cell.args, *extra])
            min_args = _fit_args(min_run, seed, min_dir, None, reps)
            min_args[0] = "ascend"
            min_args.append(f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
            _run_cli(min_args)
            rows += [{**r, "run": name, "seed": seed} for r in load_rows(min_dir / "results.json")]
    return rows


def _configs(task: str, method: str) -> list[str]:
    """``ens_mean``: ``configs/<task>/ens_mean.yaml``; ``ens_mean_ignite``: that and ``configs/ignite.yaml``."""
    base = method.removesuffix("_ignite")
    ignite = [str(REPO / "configs" / "ignite.yaml")] if base != method else []
    return [str(REPO / "configs" / task / f"{base}.yaml"), *ignite]


def _smoke_overlays(cell: Cell) -> list[str]:
    quick = {"coms": "quick_coms.yaml", "tri_mentoring": "quick_tri_mentoring.yaml"}
    base = cell.method.removesuffix("_ignite")
    return [str(REPO / "configs" / quick.get(base, "quick.yaml"))]


def _smoke_args(cell: Cell) -> list[str]:
    """Smoke-only sizes of a method's own loops (COMs' negatives and search)."""
    if cell.method.startswith("coms"):
        return ["--model.init_args.particle_steps=3", "--ascent.steps=3"]
    return []


SMOKE_ARGS = ["--trainer.max_epochs=1", "--data.max_samples=600", "--data.subsample=stride", "--data.val_size=100",
              "--model.init_args.hidden=[16, 16]", "--ascent.steps=3", "--trainer.accelerator=cpu",
              "--trainer.limit_train_batches=3"]


def _tfbind10_stand_in(root: Path) -> Path:
    """Every 10-mer once in design-bench's layout (scored by its share of class 3), and TFBind10's
    registration relaxed to any shard and row count: the smoke run's stand-in for the real 84 shards."""
    from dataclasses import replace  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from lightning_mbo.tasks import TASKS  # noqa: PLC0415

    name = TASK_NAMES["tfbind10"]
    TASKS[name] = replace(TASKS[name], num_shards=None, num_rows=None)
    folder = root / "tf_bind_10-pho4"
    if not (folder / "tf_bind_10-y-0.npy").exists():
        folder.mkdir(parents=True, exist_ok=True)
        keys = np.arange(4**10)
        designs = ((keys[:, None] // 4 ** np.arange(9, -1, -1)) % 4).astype(np.int32)
        score = (designs == 3).mean(-1, dtype=np.float32)[:, None] + np.float32(0.01) * (keys % 7)[:, None]
        np.save(folder / "tf_bind_10-x-0.npy", designs)
        np.save(folder / "tf_bind_10-y-0.npy", score.astype(np.float32))
    return root


def _timed(cell: Cell, out: Path, extra: list[str], smoke: bool, data_dir: str | None, rows: list[dict]) -> dict:
    """Run one cell (TFBind10's with LIGHTNING_MBO_DATA_DIR set to ``data_dir``), adding its rows to
    ``rows``; returns its status and whole-run seconds (a failure is recorded, not raised)."""
    before = os.environ.get("LIGHTNING_MBO_DATA_DIR")
    if cell.task == "tfbind10":
        os.environ["LIGHTNING_MBO_DATA_DIR"] = str(data_dir)
    t0 = time.monotonic()
    try:
        rows += _run_cell(cell, out, extra, smoke)
        result = {"status": "done"}
    except Exception as e:  # noqa: BLE001  (a failed cell must not lose the others)
        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:500]}
    finally:
        if before is None:
            os.environ.pop("LIGHTNING_MBO_DATA_DIR", None)
        else:
            os.environ["LIGHTNING_MBO_DATA_DIR"] = before
    return {**result, "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results/gpu_check/latest",
                   help="where table.md, cells.json and the runs go (default: $OUT, else a local folder)")
    p.add_argument("--tfbind10-dir", default=os.environ.get("LIGHTNING_MBO_DATA_DIR"),
                   help="folder holding tf_bind_10-pho4/ (default: $LIGHTNING_MBO_DATA_DIR)")
    p.add_argument("--budget", type=float, default=500.0, help="seconds for all cells together")
    p.add_argument("--throughput", type=float, default=ASSUMED_TFLOPS, help="assumed TFLOP/s for the estimate")
    p.add_argument("--only", nargs="*", default=None, help="cell names to run (e.g. tfbind8_ens_mean)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, same code path")
    p.add_argument("--runs-dir", default=None,
                   help="where each run's folder (results.json, checkpoints) goes (default: <out>/runs); on the "
                        "device keep it out of $OUT, which brings back only a few small files")
    p.add_argument("--copy-to", default=None, help="also write table.md etc. here (e.g. benchmarks/results/gpu_check)")
    a = p.parse_args(argv)
    start = time.monotonic()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(a.runs_dir) if a.runs_dir else out / "runs"
    extra = list(SMOKE_ARGS) if a.smoke else ["--trainer.accelerator=gpu"]
    todo = groups()
    if a.only is not None:
        unknown = set(a.only) - {c.name for c in cells()}
        if unknown:
            raise SystemExit(f"gpu_check: unknown cell(s) {sorted(unknown)}; pick from {[c.name for c in cells()]}")
        todo = [[c for c in g if c.name in a.only] for g in todo]
        todo = [g for g in todo if g]
    data_dir = a.tfbind10_dir
    if data_dir is None and a.smoke:
        data_dir = str(_tfbind10_stand_in(out / "tfbind10_stand_in"))
    elif a.smoke:
        _tfbind10_stand_in(Path(data_dir))
    rows: list[dict] = []
    record: dict = {"smoke": a.smoke, "budget_s": a.budget, "assumed_tflops": a.throughput, "cells": []}
    dests = [out] + ([Path(a.copy_to)] if a.copy_to else [])
    label = ("CPU smoke run of benchmarks/gpu_check.py (tiny sizes, NOT results)" if a.smoke else
             "Published settings (configs/tfbind8|tfbind10/*.yaml), up to 16 seeds as replicates of one stacked "
             "module per mode; Ens-Min searches the Ens-Mean fit's members; whole-run seconds per cell")
    for group in todo:
        left = a.budget - (time.monotonic() - start)
        if a.smoke:
            for c in group:
                c.replicates = min(c.replicates, 2)
            why = None
        else:
            # Later cells are planned against the estimate corrected by what the finished ones took.
            done = [c for c in record["cells"] if c["status"] == "done"]
            ratio = sum(c["seconds"] for c in done) / sum(c["estimate_s"] for c in done) if done else 1.0
            why = plan(group, left / ratio, a.throughput)
        if group[0].task == "tfbind10" and not data_dir:
            why = "no TFBind10 data: pass --tfbind10-dir or set LIGHTNING_MBO_DATA_DIR"
        for cell in group:
            entry = {"cell": cell.name, "seeds": cell.replicates,
                     "estimate_s": round(estimate_seconds(cell, a.throughput), 1), "flops": flops(cell)}
            if why:
                entry.update(status="skipped", reason=why)
            else:
                entry.update(_timed(cell, runs_dir, extra, a.smoke, data_dir, rows))
            record["cells"].append(entry)
            print(f"gpu_check: {json.dumps(entry)}", file=sys.stderr, flush=True)
            skipped = [f"{c['cell']}: {c['reason']}" for c in record["cells"] if c["status"] != "done"]
            timed = [f"{c['cell']} {c['seconds']:.0f} s ({c['seeds']} seeds"
                     + (", with the Ens-Min search)" if "ens_mean" in c["cell"] else ")")
                     for c in record["cells"] if c["status"] == "done"]
            text = (label + "\n\nwhole-run seconds per cell: " + "; ".join(timed)
                    + ("\n\nnot run: " + "; ".join(skipped) if skipped else ""))
            for d in dests:
                d.mkdir(parents=True, exist_ok=True)
                save_json(d / "cells.json", record)
                if rows:
                    write_table(rows, d, text)
    print(f"gpu_check: {time.monotonic() - start:.0f} s, tables in {', '.join(map(str, dests))}", file=sys.stderr)
    return 0 if all(c["status"] != "failed" for c in record["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
