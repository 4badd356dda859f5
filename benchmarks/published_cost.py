"""What the released settings cost on this CPU: one seed, and 8 seeds stacked, per method, task and IGNITE.

For every method that trains a small surrogate at its released settings (``configs/<task>/{cma_es,
bo_qei,reinforce,cbas,mins,roma}.yaml``; TFBind8 and TFBind10; each without and with IGNITE,
``configs/ignite.yaml`` stacked after the method config), the script measures a short slice of the
real run and extrapolates it linearly to the released run:

* **Training** (the ``fit`` command line, :func:`lightning_mbo.fit.run_cli`, with
  ``--trainer.max_epochs 2 --trainer.limit_train_batches N``): a callback records the process time
  of every training-batch cycle (one ``on_train_batch_start`` to the next: loading, the step and its
  hooks) and of each epoch (its batches, the validation pass over all held-out rows, the
  ``last.ckpt`` write). Per batch ``b`` is the median cycle after the first two; per epoch ``e`` is
  the second epoch less its ``N`` batches at ``b``; the fixed part ``f`` (building the trainer,
  split, sanity check, warm-up) is what is left of the whole ``fit``. The released training is then
  ``f + E * (e + B * b)``, ``E`` the config's ``max_epochs`` and ``B`` the training loader's full
  length at the released batch size (TFBind8: 32,898 visible rows, 200 held out, 327 batches of 100;
  TFBind10: the configs' uniform 10,000-row subsample of the 4,161,482 visible rows, 9,800 trained
  on, 98 batches of 100 or 77 of 128; RoMA and MINs' surrogate use batch 128).
* **Search** (:meth:`lightning_mbo.callbacks.DesignAscent.run` on the trained module, the code
  ``fit`` runs when training ends and ``ascend`` runs on a checkpoint), at a base budget and at
  the base plus a step of each budget knob; what the run does once the search is done (decoding,
  oracle scoring, the movement statistics: :data:`AFTER_SEARCH`) is timed and left out.
  A linear fit per knob (:func:`fit_search`) gives a fixed part and a cost per unit, extrapolated
  to the released budget (:func:`extrapolate_search`): CMA-ES iterations (100; an upper bound:
  a strategy may stop earlier), BO-qEI rounds (10; per round at the first rounds' GP size of 500
  points, which grows to 788, so a lower bound), REINFORCE updates (200), CbAS offline VAE epochs
  (200 TFBind8 / 100 TFBind10) and iterations (20), MINs GAN batches (200 / 100 epochs of all
  visible rows less 200 in batches of 128; measured on a few batches per epoch, the GAN's rows
  cut for the slice), RoMA design steps (500, each after 100 adaptation steps). IGNITE constrains
  training only, so a pair's search is measured once (on the cell that runs first) and used for
  both cells.
* **8 seeds**: the same with ``--model.init_args.replicates 8`` (seeds 0..7 as a batch dimension
  of ONE module; :mod:`lightning_mbo.methods.replicates`). Its training is always measured, its
  search where it can decide the cell: a searcher that takes the replicates one after another (all
  but gradient ascent, which moves every replicate's designs at once) costs at least 8 x one seed's
  search, so when the stacked training plus that bound (or, for gradient ascent, the training
  alone) exceeds the threshold, the search is not run and the table gives the bound (``≥``). A run
  the framework refuses to stack (every TFBind10 config here: the random 10,000-row subsample
  depends on the seed, :meth:`lightning_mbo.data.MBODataModule.connect`) counts as separate jobs,
  8 x one seed, with the reason the code gives.
* **FLOPs**: the matrix products of one training step (:class:`MatmulFlops`), times
  ``B * E``: one seed's training GFLOP.

The 2x2048 methods (grad_ascent, ens_mean, ens_min, coms, ict, tri_mentoring) are not run: the
first real training step of each (config as released, with and without IGNITE) is FLOP-counted and
their training time is those FLOPs at the matrix-product rate measured here (single-thread ``bmm``
at the 2x2048 layer's shapes, a floor: the real step sits 1.1-1.2x above it, benchmarks/README.md);
their search is not estimated. They all go to the GPU check.

Decision per cell: 8 seeds (stacked, or 8 separate one-seed jobs) at most ``--threshold-min``
(20) minutes of CPU process time, one torch thread: "CPU grid"; else "GPU check". Process time is
what a job with a core of its own takes; the wall time of the slices under the load of the run is
recorded next to it.

Released settings, as the configs cite them: design-baselines (Trabucco et al., "Design-Bench",
ICML 2022: the 5 x 256 Gaussian ensembles, CMA-ES, BO-qEI, REINFORCE, CbAS after Brookes et al.
ICML 2019, MINs after Kumar and Levine NeurIPS 2020, gradient ascent and Ens-Mean/Min), the IGNITE
repository's runs and constraint (Dao et al., "Incorporating Surrogate Gradient Norm", NeurIPS 2024:
rho 0.05, eps 0.1, lambda 1e-3, eta 1e-3, finite difference r 0.05), RoMA (Yu et al., NeurIPS 2021;
its AntMorphology settings, unverified on TFBind), COMs (Trabucco et al., ICML 2021), ICT (Yuan
et al., NeurIPS 2023), Tri-mentoring (Chen et al., NeurIPS 2023).

    OMP_NUM_THREADS=1 python benchmarks/published_cost.py                   # every cell, ~10 min
    python benchmarks/published_cost.py --smoke --out /tmp/published_cost   # tiny slices, 3 cells
    python benchmarks/published_cost.py --cells 'tfbind8/cma_es*,tfbind8/ens_mean'
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _common import quiet_lightning, table, versions_line  # noqa: E402

quiet_lightning()

from pytorch_lightning.callbacks import Callback, ModelCheckpoint  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from lightning_mbo.benchmark import stacks_seeds  # noqa: E402
from lightning_mbo.callbacks.design_ascent import DesignAscent  # noqa: E402
from lightning_mbo.fit import run_cli  # noqa: E402
from lightning_mbo.results import atomic_write, commit, save_json  # noqa: E402
from lightning_mbo.validation import SettingsError  # noqa: E402

SMALL = ("cma_es", "bo_qei", "reinforce", "cbas", "mins", "roma")
BIG = ("grad_ascent", "ens_mean", "ens_min", "coms", "ict", "tri_mentoring")
TASKS = ("tfbind8", "tfbind10")
SEEDS = 8
THRESHOLD_MIN = 20.0
CPU, GPU = "CPU grid", "GPU check"
COLUMNS = ["method", "task", "IGNITE", "1 seed train s", "1 seed search s", "8 stacked train s", "8 seeds search s",
           "8 seeds total min", "training GFLOP", "where"]


# --------------------------------------------------------------------------- the arithmetic (pure)
def extrapolate_train(fixed: float, per_batch: float, per_epoch: float, batches: int, epochs: int) -> float:
    """Seconds of a released training run: ``fixed + epochs * (per_epoch + batches * per_batch)``."""
    return fixed + epochs * (per_epoch + batches * per_batch)


def slice_train(fit_seconds: float, per_batch: float, epoch_seconds: float, batches: int,
                epochs: int) -> tuple[float, float]:
    """``(fixed, per_epoch)`` of a measured slice of ``epochs`` epochs of ``batches`` batches each.

    Args:
        fit_seconds: the whole ``fit`` of the slice.
        per_batch: a training batch's cycle (median).
        epoch_seconds: the last epoch's span (its batches, validation, checkpoint).
        batches: batches per epoch in the slice.
        epochs: epochs in the slice.
    """
    per_epoch = max(epoch_seconds - batches * per_batch, 0.0)
    fixed = max(fit_seconds - epochs * (per_epoch + batches * per_batch), 0.0)
    return fixed, per_epoch


def fit_search(base: dict[str, float], base_seconds: float,
               steps: dict[str, tuple[float, float]]) -> tuple[float, dict[str, float]]:
    """A search's fixed seconds and seconds per unit of each budget knob, from a run at ``base``
    (units per knob) taking ``base_seconds`` and one run per knob at ``base[k] + steps[k][0]`` units
    taking ``steps[k][1]`` seconds (the other knobs at base). Slopes and the fixed part are kept >= 0."""
    per_unit = {k: max((seconds - base_seconds) / delta, 0.0) for k, (delta, seconds) in steps.items()}
    fixed = max(base_seconds - sum(per_unit[k] * base[k] for k in per_unit), 0.0)
    return fixed, per_unit


def extrapolate_search(fixed: float, per_unit: dict[str, float], released: dict[str, float]) -> float:
    """Seconds of the released search: ``fixed + sum_k per_unit[k] * released[k]``."""
    return fixed + sum(per_unit[k] * released[k] for k in per_unit)


def eight_seeds(train_one: float, search_one: float, train_stacked: float | None,
                search_stacked: float | None, seeds: int = SEEDS) -> tuple[float, float, float]:
    """``(train, search, total)`` seconds of ``seeds`` seeds: the stacked run's when it stacks
    (``train_stacked`` given), else ``seeds`` separate one-seed jobs."""
    if train_stacked is None or search_stacked is None:
        train, search = seeds * train_one, seeds * search_one
    else:
        train, search = train_stacked, search_stacked
    return train, search, train + search


def decide(total_seconds: float, threshold_min: float = THRESHOLD_MIN) -> str:
    """Where 8 seeds of a cell run: the CPU grid when they take at most ``threshold_min`` minutes."""
    return CPU if total_seconds <= threshold_min * 60 else GPU


# --------------------------------------------------------------------------- search budgets
@dataclass
class Knob:
    """One budget knob of a search: where it lives, its slice values, its released units."""

    name: str
    attr: str  # attribute of the searcher
    base: int
    step: int


#: The knobs of each searcher, by class name, and their slices (base, step).
KNOBS: dict[str, list[Knob]] = {
    "CMAES": [Knob("iterations", "iterations", 2, 4)],
    "BOqEI": [Knob("rounds", "rounds", 1, 1)],
    "Reinforce": [Knob("iterations", "iterations", 2, 8)],
    "CbAS": [Knob("offline epochs", "offline_epochs", 0, 1), Knob("iterations", "iterations", 1, 1)],
    "MINs": [Knob("GAN batches", "gan_epochs", 1, 1)],
    "GradientAscent": [Knob("design steps", "steps", 2, 4)],
}
SMOKE_KNOBS: dict[str, list[Knob]] = {
    "CMAES": [Knob("iterations", "iterations", 1, 2)],
    "GradientAscent": [Knob("design steps", "steps", 1, 1)],
}
#: GAN batches per epoch in a MINs slice (the GAN's rows are cut to this many batches).
MINS_SLICE_BATCHES = 3


@contextlib.contextmanager
def mins_rows(batches: int | None) -> Iterator[None]:
    """MINs' GAN fits on its first ``batches`` batches of rows only (``None``: all rows)."""
    from lightning_mbo.search.mins import MINs  # noqa: PLC0415

    if batches is None:
        yield
        return
    original = MINs.fit_data

    def cut(self, *args, **kwargs):
        x, y, w = original(self, *args, **kwargs)
        n = batches * self.batch_size
        return x[:n], y[:n], w[:n]

    MINs.fit_data = cut
    try:
        yield
    finally:
        MINs.fit_data = original


def _target(callback: DesignAscent) -> Any:
    """What holds the search budget: the searcher (or, where gradient ascent has no searcher object,
    DesignAscent's own ``steps``)."""
    return callback if callback.searcher is None else callback.searcher


def _joint(callback: DesignAscent) -> bool:
    """Whether the search runs every replicate's candidates at once (gradient ascent) rather than one
    replicate after another."""
    return callback.searcher is None or bool(getattr(callback.searcher, "joint_replicates", False))


def released_units(callback: DesignAscent, knobs: list[Knob], visible_rows: int,
                   default_steps: int) -> dict[str, float]:
    """The released budget in each knob's units (MINs: GAN batches over all its rows; gradient
    ascent left unset: the method's own steps, ``default_steps``)."""
    searcher, out = _target(callback), {}
    for k in knobs:
        value = getattr(searcher, k.attr)
        value = float(default_steps if value is None else value)
        if type(searcher).__name__ == "MINs":
            value *= math.ceil((visible_rows - searcher.holdout) / searcher.batch_size)
        out[k.name] = value
    return out


def slice_units(searcher: Any, knob: Knob, value: int) -> float:
    """Units a slice at knob value ``value`` runs (MINs: epochs x the slice's batches)."""
    return float(value * MINS_SLICE_BATCHES) if type(searcher).__name__ == "MINs" else float(value)


# --------------------------------------------------------------------------- measuring
class MatmulFlops(TorchDispatchMode):
    """FLOPs of every matrix product run under it (``2 m k n`` per product, times the batch), counted
    at the dispatcher as ``step_vs_flops.py`` does: unlike ``torch.utils.flop_counter`` it installs no
    module hooks, so steps that call ``torch.autograd.grad`` inside (COMs' negatives) are counted too."""

    OPS = {"mm", "addmm", "bmm", "baddbmm"}

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.OPS:
            a, b = [t for t in args if isinstance(t, torch.Tensor)][-2:]
            self.flops += 2 * (a.shape[0] if a.dim() == 3 else 1) * a.shape[-2] * a.shape[-1] * b.shape[-1]
        return func(*args, **(kwargs or {}))


class SliceClock(Callback):
    """Process time of each training-batch cycle and each epoch; the FLOPs of one step."""

    def __init__(self, count_at: int | None = 1) -> None:
        self.starts: list[list[float]] = []  # per epoch, process time at each batch start
        self.epoch_start: list[float] = []
        self.train_end = 0.0
        self.loader_batches = 0
        self.count_at = count_at  # the first epoch's batch whose FLOPs are counted (None: none)
        self.step_flops: int | None = None
        self._counter: Any = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.loader_batches = len(trainer.train_dataloader)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start.append(time.process_time())
        self.starts.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts[-1].append(time.process_time())
        if self.step_flops is None and len(self.epoch_start) == 1 and batch_idx == self.count_at:
            self._counter = MatmulFlops()
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.step_flops = int(self._counter.flops)
            self._counter = None

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_end = time.process_time()

    def per_batch(self) -> float:
        """Median batch cycle, the first two cycles of the first epoch left out (warm-up, FLOP count)."""
        cycles = []
        for e, starts in enumerate(self.starts):
            diffs = [b - a for a, b in zip(starts, starts[1:], strict=False)]
            cycles += diffs[2:] if e == 0 else diffs
        return statistics.median(cycles)

    def last_epoch(self) -> float:
        return self.train_end - self.epoch_start[-1]


def _drop(trainer, kinds: tuple[type, ...]) -> None:
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, kinds)]


def _searcher_key(callback: DesignAscent) -> str:
    return "GradientAscent" if callback.searcher is None else type(callback.searcher).__name__


def cell_args(task: str, method: str, ignite: bool, replicates: int, run_dir: Path, extra: list[str]) -> list[str]:
    configs = ["--config", str(REPO / "configs" / task / f"{method}.yaml")]
    if ignite:
        configs += ["--config", str(REPO / "configs" / "ignite.yaml")]
    return [*configs, "--seed_everything=0", "--trainer.logger=false", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={run_dir}", f"--ascent.output_dir={run_dir}",
            *([f"--model.init_args.replicates={replicates}"] if replicates > 1 else []), *extra]


def build(args: list[str]):
    """The ``fit`` command line's CLI (trainer, model, datamodule), built but not run."""
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when given args while sys.argv holds others
    try:
        return run_cli(args, run=False)
    finally:
        sys.argv = argv


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The runs' own result lines off standard output (this script prints its table)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Process and wall seconds of ``fn()``, and its result."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


#: What ``DesignAscent.run`` asks of the datamodule once the search is done: decoding, oracle scoring
#: and the results' movement statistics (on TFBind10 a pass over the 4.2 M-row oracle table and the
#: visible rows, seconds per run); timed and left out of the search.
AFTER_SEARCH = ("decode", "score", "normalize_score", "denormalize_y", "movement")


def search_point(callback: DesignAscent, trainer, model, dm, knobs: list[Knob], values: dict[str, int]) -> float:
    """Process seconds of one ``DesignAscent.run`` at the given knob values, less its scoring and results
    bookkeeping (:data:`AFTER_SEARCH`)."""
    for k in knobs:
        setattr(_target(callback), k.attr, values[k.name])
    after = [0.0]

    def timed_call(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args, **kwargs):
            c = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                after[0] += time.process_time() - c
        return call

    for name in AFTER_SEARCH:
        setattr(dm, name, timed_call(getattr(dm, name)))
    try:
        cpu, _, _ = timed(lambda: callback.run(trainer, model, dm))
    finally:
        for name in AFTER_SEARCH:
            delattr(dm, name)
    return cpu - after[0]


def measure_run(task: str, method: str, ignite: bool, replicates: int, batches: int, work: Path,
                want_search: Callable[[dict[str, Any]], bool], smoke: bool) -> dict[str, Any]:
    """One slice of a cell's run: its training, then (when ``want_search`` of the training's record
    says so) its search at the knob points."""
    run_dir = Path(tempfile.mkdtemp(dir=work))
    knobs_table = SMOKE_KNOBS if smoke else KNOBS
    try:
        cli = build(cell_args(task, method, ignite, replicates, run_dir,
                              ["--trainer.max_epochs=2", f"--trainer.limit_train_batches={batches}"]))
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        callback = next(c for c in trainer.callbacks if isinstance(c, DesignAscent))
        callback.connect(config_files=[], checkpoint=None)
        key = _searcher_key(callback)
        knobs = knobs_table.get(key, KNOBS[key])
        released = released_units(callback, knobs, len(dm.y), model.search_defaults(dm.search_data()).steps)
        _drop(trainer, (DesignAscent,))  # searched below, by the same DesignAscent.run
        clock = SliceClock()
        trainer.callbacks.append(clock)
        fit_cpu, fit_wall, _ = timed(lambda: trainer.fit(model, datamodule=dm))
        b = clock.per_batch()
        fixed, per_epoch = slice_train(fit_cpu, b, clock.last_epoch(), batches, 2)
        epochs = released_epochs(task, method)
        out: dict[str, Any] = {
            "slice": f"2 epochs x {batches} batches", "fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall,
            "per_batch_s": b, "per_epoch_s": per_epoch, "fixed_s": fixed, "loader_batches": clock.loader_batches,
            "epochs": epochs, "train_s": extrapolate_train(fixed, b, per_epoch, clock.loader_batches, epochs),
            "step_flops": clock.step_flops, "model": cli.config["model"]["class_path"],
            "searcher": key, "joint_search": _joint(callback), "released_search": released,
        }
        if want_search(out):
            base = {k.name: k.base for k in knobs}
            with mins_rows(MINS_SLICE_BATCHES if key == "MINs" else None):
                t0 = search_point(callback, trainer, model, dm, knobs, base)
                steps = {}
                for k in knobs:
                    t = search_point(callback, trainer, model, dm, knobs, {**base, k.name: k.base + k.step})
                    steps[k.name] = (slice_units(_target(callback), k, k.base + k.step)
                                     - slice_units(_target(callback), k, k.base), t)
            base_units = {k.name: slice_units(_target(callback), k, k.base) for k in knobs}
            s_fixed, per_unit = fit_search(base_units, t0, steps)
            out.update(search_points={"base_units": base_units, "base_s": t0,
                                      "steps": {k: {"units": d, "s": s} for k, (d, s) in steps.items()}},
                       search_fixed_s=s_fixed, search_per_unit_s=per_unit,
                       search_s=extrapolate_search(s_fixed, per_unit, released))
        return out
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def released_epochs(task: str, method: str) -> int:
    import yaml  # noqa: PLC0415

    return int(yaml.safe_load((REPO / "configs" / task / f"{method}.yaml").read_text())["trainer"]["max_epochs"])


@dataclass
class Cell:
    method: str
    task: str
    ignite: bool
    kind: str  # "measured" or "flops"
    train_one_s: float = float("nan")
    search_one_s: float | None = None
    train_8_s: float = float("nan")
    search_8_s: float | None = None
    total_8_s: float = float("nan")
    train_gflop: float | None = None
    where: str = ""
    eight_as: str = ""
    search_8_bound: bool = False  # search_8_s is a lower bound (8 x one seed), not measured
    notes: list[str] = field(default_factory=list)
    one: dict[str, Any] = field(default_factory=dict)
    stacked: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.task}/{self.method}{'+ignite' if self.ignite else ''}"


def measure_small(task: str, method: str, ignite: bool, work: Path, searches: dict, batches: int,
                  smoke: bool, threshold_min: float) -> Cell:
    """One seed and 8 seeds of a small-surrogate cell. A pair (without / with IGNITE) shares its searches.

    The 8 seeds' search is measured only when it can matter: a searcher that runs the replicates one
    after another (all but gradient ascent) searches each with one seed's budget and scores on all
    replicates' members, so 8 seeds cost at least 8 x one seed's search; when the stacked training plus
    that already exceeds the threshold, the cell goes to the GPU check with that lower bound."""
    cell = Cell(method, task, ignite, "measured")
    key1, key8, refused = (task, method, 1), (task, method, SEEDS), (task, method, "refused")
    one = measure_run(task, method, ignite, 1, batches, work, lambda r: key1 not in searches, smoke)
    if key1 not in searches:
        searches[key1] = one
    cell.one = one
    cell.train_one_s = one["train_s"]
    cell.search_one_s = searches[key1]["search_s"]
    if one["step_flops"] is not None:
        cell.train_gflop = one["step_flops"] * one["loader_batches"] * one["epochs"] / 1e9
    if ignite and searches[key1] is not one:
        cell.notes.append("search measured on the cell without IGNITE (IGNITE constrains training only)")
    bound = SEEDS * cell.search_one_s

    def want(r: dict[str, Any]) -> bool:  # measure the 8 seeds' search only where it can decide the cell
        return key8 not in searches and r["train_s"] + (0.0 if r["joint_search"] else bound) <= threshold_min * 60

    stacked = None
    if refused not in searches:
        try:
            stacked = measure_run(task, method, ignite, SEEDS, batches, work, want, smoke)
        except SettingsError as err:
            searches[refused] = str(err)
    if stacked is not None:
        cell.stacked = stacked
        if "search_s" in stacked:
            searches[key8] = stacked
        if key8 in searches:
            search8 = searches[key8]["search_s"]
        elif stacked["joint_search"]:
            search8 = None
            cell.search_8_bound = True
            cell.notes.append("8 seeds' search not measured: the stacked training alone exceeds the threshold")
        else:
            search8 = bound
            cell.search_8_bound = True
            cell.notes.append("8 seeds' search not measured: at least 8 x one seed's (the replicates are searched "
                              "one after another), which with the stacked training already exceeds the threshold")
        cell.eight_as = "stacked (replicates 8)"
        if not stacks_seeds(one["model"]):
            cell.notes.append(f"{one['model'].rsplit('.', 1)[-1]} takes replicates 8 (measured stacked), but the "
                              "grid runner refuses stack: true for it (its class does not declare stacks_seeds: its "
                              "replicates are not proven to be plain runs of their seeds)")
        cell.train_8_s, cell.search_8_s, cell.total_8_s = eight_seeds(cell.train_one_s, cell.search_one_s,
                                                                      stacked["train_s"], search8 or 0.0)
        cell.search_8_s = search8
    else:
        cell.eight_as = "separate jobs: 8 x one seed"
        cell.notes.append(f"refuses replicates 8: {searches[refused]}")
        cell.train_8_s, cell.search_8_s, cell.total_8_s = eight_seeds(cell.train_one_s, cell.search_one_s,
                                                                      None, None)
    cell.where = decide(cell.total_8_s, threshold_min)
    return cell


# --------------------------------------------------------------------------- the 2x2048 cells: FLOPs only
def matmul_rate(hidden: int = 2048, batch: int = 128, members: int = 5, reps: int = 3) -> float:
    """FLOP/s of single-thread ``bmm`` at a ``hidden x hidden`` layer's three training products
    (forward, input gradient, weight gradient), median of ``reps`` runs each."""
    w = torch.randn(members, hidden, hidden)
    x = torch.randn(members, batch, hidden)
    g = torch.randn(members, batch, hidden)
    shapes = [(x, w), (g, w.transpose(1, 2)), (x.transpose(1, 2), g)]
    seconds = 0.0
    for a, b in shapes:
        out = torch.bmm(a, b)
        times = []
        for _ in range(reps):
            c = time.process_time()
            torch.bmm(a, b, out=out)
            times.append(time.process_time() - c)
        seconds += statistics.median(times)
    return 3 * 2 * members * batch * hidden * hidden / seconds


def measure_big(task: str, method: str, ignite: bool, work: Path, rate: float, smoke: bool) -> Cell:
    """One real training step FLOP-counted; the released training at ``rate`` FLOP/s (a floor)."""
    cell = Cell(method, task, ignite, "flops", eight_as="FLOP floor")
    run_dir = Path(tempfile.mkdtemp(dir=work))
    try:
        # 2 batches, not 1: the command line reads limit_train_batches 1 as 1.0, the whole epoch.
        extra = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=0",
                 "--trainer.num_sanity_val_steps=0"]
        if smoke:
            extra.append("--model.init_args.hidden=[64, 64]")
        cli = build(cell_args(task, method, ignite, 1, run_dir, extra))
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        try:  # does one module stand for 8 seeds here? (the datamodule's answer)
            dm.connect(members=SEEDS, seeds=list(range(SEEDS)))
            stacks = "stacks as replicates 8" + ("" if stacks_seeds(cli.config["model"]["class_path"])
                                                 else " (not in the grid runner: stack: true refused)")
        except SettingsError as err:
            stacks = f"separate jobs: {err}"
        _drop(trainer, (DesignAscent, ModelCheckpoint))
        clock = SliceClock(count_at=0)
        trainer.callbacks.append(clock)
        trainer.fit(model, datamodule=dm)
        epochs = released_epochs(task, method)
        flops = float(clock.step_flops or 0) * clock.loader_batches * epochs
        cell.train_gflop = flops / 1e9
        cell.train_one_s = flops / rate
        cell.train_8_s = SEEDS * cell.train_one_s
        cell.total_8_s = cell.train_8_s
        cell.where = GPU
        cell.one = {"step_flops": clock.step_flops, "loader_batches": clock.loader_batches, "epochs": epochs}
        cell.notes.append(f"FLOP floor at {rate / 1e9:.0f} GFLOP/s, training only (search not estimated); {stacks}")
        return cell
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------- output
def _s(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.0f}" if v >= 10 else f"{v:.1f}"


def rows_of(cells: list[Cell]) -> list[list[str]]:
    """The table's rows: ``≥`` marks a lower bound (a FLOP floor, or 8 x one seed's search not
    measured), ``(8 x 1)`` eight separate one-seed jobs."""
    rows = []
    for c in cells:
        floor = c.kind == "flops"
        separate = " (8 x 1)" if c.eight_as.startswith("separate") else ""
        ge = "≥ " if floor else ""
        rows.append([c.method, c.task, "yes" if c.ignite else "no", ge + _s(c.train_one_s), _s(c.search_one_s),
                     ge + _s(c.train_8_s) + separate,
                     "not measured" if c.search_8_bound and c.search_8_s is None
                     else ("≥ " if c.search_8_bound else "") + _s(c.search_8_s) + separate,
                     ("≥ " if floor or c.search_8_bound else "") + f"{c.total_8_s / 60:,.1f}",
                     "-" if c.train_gflop is None else f"{c.train_gflop:,.0f}", c.where])
    return rows


#: How each search's slice becomes the released budget (the table's header repeats it).
SEARCH_NOTES = [
    "CMA-ES: iterations, 100 released (an upper bound: a strategy may stop earlier)",
    "BO-qEI: rounds, 10 released (a lower bound: the slice's rounds fit the GP on 500-532 points, the last "
    "rounds on up to 788)",
    "REINFORCE: policy updates, 200 released",
    "CbAS: offline VAE epochs (200 TFBind8, 100 TFBind10) and iterations (20), one slope each",
    f"MINs: GAN batches, the GAN's rows cut to {MINS_SLICE_BATCHES} batches per epoch in the slice; released "
    "epochs x all visible rows less 200 in batches of 128",
    "RoMA: design steps (each after 100 adaptation steps), 500 released",
]


def _budget(released: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in released.items())


def markdown(cells: list[Cell], meta: dict[str, Any]) -> str:
    ratio = meta.get("wall_over_cpu")
    lines = ["# Released settings: seconds of one seed and of 8 seeds (CPU)", "",
             f"{meta['machine']}; {meta['versions']}; commit {meta['commit']}; {meta['threads']} torch thread(s); "
             f"load average {meta['load_start']} at start, {meta['load_end']} at end"
             + (f"; the slices' wall time was {ratio:.2f}x their process time (median)" if ratio else "")
             + (f"; this run took {meta['elapsed_min']:.1f} min" if meta.get("elapsed_min") else "") + ".", "",
             "Process seconds (one torch thread), extrapolated linearly from short slices of the real runs "
             f"({meta['slice_batches']} training batches in each of 2 epochs): training = fixed + E x (per epoch + "
             "B x per batch), E the config's epochs, B its loader's batches at the released batch size; search = "
             "fixed + per unit x the released budget, from runs at a base budget and one step up per knob, the "
             "decoding, oracle scoring and movement statistics after it left out. 8 seeds: replicates 8 of one "
             "module (stacked), or 8 separate one-seed jobs "
             "(8 x 1) where the framework refuses to stack. ≥: a lower bound. Where: 8 seeds in at most "
             f"{meta['threshold_min']:.0f} min: {CPU}, else {GPU}. The 2x2048 cells: one real training step's "
             f"FLOPs x B x E at the bmm rate measured here ({meta['rate_gflops']:.0f} GFLOP/s), a floor for "
             "training only. Training GFLOP: one seed's matrix products (counted at the dispatcher in one step, "
             "times B x E).", "",
             table(rows_of(cells), COLUMNS), "", "Search budgets: " + "; ".join(SEARCH_NOTES) + ".", "",
             "Per cell (notes shared by several cells are numbered below):", ""]
    shared: dict[str, int] = {}
    for c in cells:
        for note in c.notes:
            if sum(note in other.notes for other in cells) > 1:
                shared.setdefault(note, len(shared) + 1)
    for c in cells:
        parts = [f"[{shared[n]}]" if n in shared else n for n in c.notes]
        if c.kind == "measured":
            o = c.one
            detail = (f"one seed {o['per_batch_s'] * 1e3:.1f} ms/batch + {o['per_epoch_s']:.2f} s/epoch, "
                      f"B {o['loader_batches']}, E {o['epochs']}")
            if c.stacked:
                detail += (f"; stacked {c.stacked['per_batch_s'] * 1e3:.1f} ms/batch + "
                           f"{c.stacked['per_epoch_s']:.2f} s/epoch")
            detail += f"; search {o['searcher']} ({_budget(o['released_search'])})"
            parts.append(detail)
        lines.append(f"- {c.id}: {c.eight_as}; " + "; ".join(parts))
    if shared:
        lines += ["", *(f"[{i}] {note}" for note, i in shared.items())]
    return "\n".join(lines) + "\n"


def write(out: Path, cells: list[Cell], meta: dict[str, Any]) -> None:
    text = markdown(cells, meta)
    atomic_write(out / "table.md", lambda f: f.write(text.encode()))
    save_json(out / "cost.json", {"meta": meta, "columns": COLUMNS, "rows": rows_of(cells),
                                  "cells": [{**asdict(c), "id": c.id} for c in cells]})


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "published_cost"))
    p.add_argument("--cells", default=None, help="comma-separated patterns of cell ids, e.g. 'tfbind8/cma_es*' "
                   "(ids: <task>/<method>[+ignite])")
    p.add_argument("--smoke", action="store_true", help="tiny slices, 3 cells (under a minute)")
    p.add_argument("--batches", type=int, default=None, help="training batches per epoch of a slice (default 6)")
    p.add_argument("--threshold-min", type=float, default=THRESHOLD_MIN)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--render", action="store_true", help="measure nothing: remake <out>/table.md from <out>/cost.json")
    return p.parse_args(argv)


def render(out: Path) -> list[Cell]:
    """``table.md`` again from ``cost.json`` (the measured numbers as they were)."""
    import json  # noqa: PLC0415

    record = json.loads((out / "cost.json").read_text())
    names = {f.name for f in fields(Cell)}
    cells = [Cell(**{k: v for k, v in c.items() if k in names}) for c in record["cells"]]
    write(out, cells, record["meta"])
    return cells


def selected(cell_id: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(cell_id, p) for p in patterns)


def main(argv: list[str] | None = None) -> list[Cell]:
    args = parse_args(argv)
    out = Path(args.out)
    if args.render:
        return render(out)
    torch.set_num_threads(args.threads)
    patterns = [p.strip() for p in args.cells.split(",")] if args.cells else None
    if args.smoke and patterns is None:
        patterns = ["tfbind8/cma_es", "tfbind8/cma_es+ignite", "tfbind8/grad_ascent"]
    batches = args.batches or (3 if args.smoke else 6)
    if batches < 3:
        raise SystemExit("--batches must be at least 3 (the first two batches are warm-up; 1 would read as 1.0, "
                         "the whole epoch)")
    load_start = os.getloadavg()
    print(f"== Released settings, one seed and 8 seeds; load average {load_start[0]:.2f} {load_start[1]:.2f} "
          f"{load_start[2]:.2f} at start; {versions_line()}", flush=True)
    meta: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        "versions": versions_line(), "commit": commit(REPO), "threads": args.threads, "smoke": args.smoke,
        "threshold_min": args.threshold_min, "slice_batches": batches,
        "load_start": " ".join(f"{v:.2f}" for v in load_start), "load_end": "", "rate_gflops": float("nan"),
    }
    small = [(t, m, i) for t in TASKS for m in SMALL for i in (False, True)]
    big = [(t, m, i) for t in TASKS for m in BIG for i in (False, True)]
    ids = lambda t, m, i: f"{t}/{m}{'+ignite' if i else ''}"
    small = [c for c in small if selected(ids(*c), patterns)]
    big = [c for c in big if selected(ids(*c), patterns)]
    cells: list[Cell] = []
    searches: dict = {}
    work = Path(tempfile.mkdtemp(prefix="published_cost_"))
    started = time.perf_counter()
    try:
        if big:
            rate = matmul_rate(hidden=256 if args.smoke else 2048)
            meta["rate_gflops"] = rate / 1e9
            print(f"bmm rate at the 2x2048 layer's shapes: {rate / 1e9:.1f} GFLOP/s", flush=True)
        for task, method, ignite in small:
            t0 = time.perf_counter()
            with quiet():
                cell = measure_small(task, method, ignite, work, searches, batches, args.smoke, args.threshold_min)
            cells.append(cell)
            print(f"{cell.id}: 1 seed {cell.train_one_s:.0f} + {cell.search_one_s:.0f} s, 8 seeds "
                  f"{cell.total_8_s / 60:.1f} min ({cell.eight_as}) -> {cell.where}  "
                  f"[measured in {time.perf_counter() - t0:.0f} s]", flush=True)
            meta["load_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
            meta["wall_over_cpu"] = statistics.median(
                r["fit_wall_s"] / r["fit_cpu_s"] for c in cells for r in (c.one, c.stacked) if r)
            write(out, cells, meta)
        for task, method, ignite in big:
            t0 = time.perf_counter()
            with quiet():
                cell = measure_big(task, method, ignite, work, meta["rate_gflops"] * 1e9, args.smoke)
            cells.append(cell)
            print(f"{cell.id}: {cell.train_gflop:,.0f} GFLOP -> >= {cell.train_one_s / 60:.0f} min per seed  "
                  f"[counted in {time.perf_counter() - t0:.0f} s]", flush=True)
        load_end = os.getloadavg()
        meta["load_end"] = " ".join(f"{v:.2f}" for v in load_end)
        meta["elapsed_min"] = (time.perf_counter() - started) / 60
        write(out, cells, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(cells, meta))
    print(f"load average {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at end; written to {out}")
    return cells


if __name__ == "__main__":
    main()
