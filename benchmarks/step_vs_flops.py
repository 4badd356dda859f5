"""The stacked-ensemble training step against its FLOP floor: plain, IGNITE finite difference, IGNITE exact.

Each step is the package's own ``Surrogate.training_step`` (as in ``ignite_step_time.py``: the
Lightning calls it makes bound to their single-process equivalents). Its phases are timed from
inside by wrapping what the step calls: ``training_losses`` (forward), the backward
(``manual_backward``), IGNITE's ``grad_h`` (∇h from the data forward), its finite difference
(one forward and backward at the shifted weights) or penalty term, ``update_lambda`` and the
optimizer step; "other" is the rest of the step.

The FLOP floor: every matrix product the step runs is recorded (op, shapes, strides) in one
untimed step; its FLOPs are counted from the shapes (``2·b·m·k·n``) and the same products are
then timed bare (``torch.bmm``/``mm`` on fresh tensors of the same shapes and strides), so the
floor is the time the step's matrix products alone take at the rate this machine gives them
in this run. CPU time is process time with one torch thread, the three modes interleaved.

    python benchmarks/step_vs_flops.py                          # 2x2048, 5 members, TFBind8, batch 128
    python benchmarks/step_vs_flops.py --against /tmp/before    # also the package at DIR, interleaved

``--against DIR`` runs this script alternately with ``PYTHONPATH=DIR`` (another checkout of the
package, e.g. ``git worktree add DIR <commit>``) and with this tree, ``--rounds`` times each.

``--release-python PY`` runs ``release_tf_step.py`` (the released TensorFlow step, five members
trained one after another, plain and IGNITE's finite difference) under the interpreter ``PY``,
which must have TensorFlow, alternately with this tree, ``--rounds`` times each, and prints the
seconds per 100 five-member batches of both and the speed-ups:

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu
    python benchmarks/step_vs_flops.py --release-python /tmp/tf/bin/python --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_line, median, member_batches, quiet_lightning, table  # noqa: E402

quiet_lightning()

import lightning_mbo  # noqa: E402
import lightning_mbo.methods.ignite as ignite_mod  # noqa: E402
from lightning_mbo.data.datamodule import MBODataModule  # noqa: E402
from lightning_mbo.methods.ignite import Ignite  # noqa: E402
from lightning_mbo.methods.surrogate import Surrogate  # noqa: E402

MODES = ("plain", "fd", "exact")
PHASES = ("forward", "backward", "ignite grad h", "ignite fd pass", "ignite penalty term", "update lambda",
          "optimizer", "other")
MATMULS = {"mm", "bmm", "baddbmm", "addmm", "addbmm"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[2048, 2048])
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--task", default="TFBind8-Exact-v0")
    p.add_argument("--steps", type=int, default=6, help="timed steps per mode (per round with --against)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="with --against: alternations of the two packages")
    p.add_argument("--against", default=None, help="a checkout of the package to compare with, interleaved")
    p.add_argument("--release-python", default=None,
                   help="an interpreter with TensorFlow: also time the released step (release_tf_step.py), interleaved")
    p.add_argument("--json", action="store_true", help="print one JSON line of results (used by --against)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the package's step, instrumented
class Clock:
    """Process time per phase; a phase entered inside another is charged to the inner one only."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.totals: dict[str, float] = defaultdict(float)
        self.t = time.process_time()

    def _switch(self) -> None:
        now = time.process_time()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.t
        self.t = now

    def wrap(self, phase: str, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            self._switch()
            self.stack.append(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._switch()
                self.stack.pop()
        return run


def build(dm: MBODataModule, args: argparse.Namespace, mode: str, clock: Clock) -> Callable[[tuple], None]:
    ignite = {"plain": None, "fd": Ignite(grad_mode="finite_difference"), "exact": Ignite(grad_mode="exact")}[mode]
    torch.manual_seed(0)
    model = Surrogate(dm.input_dim, members=args.members, hidden=tuple(args.hidden), ignite=ignite)
    opt = model.configure_optimizers()
    opt = opt[0][0] if isinstance(opt, (list, tuple)) else opt
    opt.step = clock.wrap("optimizer", opt.step)
    model.optimizers = lambda *a, **k: opt
    model.manual_backward = clock.wrap("backward", lambda loss, *a, **k: loss.backward(*a, **k))
    model.log = model.log_dict = lambda *a, **k: None
    model._reduce = lambda: None
    model.training_losses = clock.wrap("forward", model.training_losses)
    if model.constraint is not None:
        model.constraint.update_lambda = clock.wrap("update lambda", model.constraint.update_lambda)
    model.train()
    whole = clock.wrap("other", model.training_step)
    return lambda batch: whole(batch, 0)


def ignite_wrappers(clock: Clock) -> None:
    """Charge IGNITE's functions (as ``GradNormConstraint.backward`` calls them) to their phases."""
    for name, phase in (("grad_h", "ignite grad h"), ("norm_gradient_finite_difference", "ignite fd pass"),
                        ("norm_penalty_term", "ignite penalty term")):
        setattr(ignite_mod, name, clock.wrap(phase, getattr(ignite_mod, name)))


# --------------------------------------------------------------------------- matrix products: record, count, replay
class MatmulRecorder(TorchDispatchMode):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.calls: list[tuple[str, str, tuple, tuple]] = []  # (phase, op, shapes, strides)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in MATMULS:
            mats = [a for a in args if isinstance(a, torch.Tensor)][-2:]
            phase = self.clock.stack[-1] if self.clock.stack else "other"
            self.calls.append((phase, name, tuple(tuple(m.shape) for m in mats), tuple(m.stride() for m in mats)))
        return func(*args, **(kwargs or {}))


def flops(shapes: tuple) -> int:
    a, b = shapes
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


def bare_seconds(shapes: tuple, strides: tuple, reps: int = 3) -> float:
    """Median process seconds of one bare product of these shapes and strides (fresh inputs, output reused)."""
    mats = []
    for shape, stride in zip(shapes, strides, strict=True):
        order = sorted(range(len(shape)), key=lambda i: -stride[i])  # memory order, outermost first
        base = torch.randn([shape[i] for i in order])
        mats.append(base.permute([order.index(i) for i in range(len(shape))]))
    op = torch.bmm if len(shapes[0]) == 3 else torch.mm
    out = op(*mats)  # the output written in place below: the arithmetic, not a fresh allocation's page faults
    times = []
    for _ in range(reps):
        t = time.process_time()
        op(*mats, out=out)
        times.append(time.process_time() - t)
    return median(times)


# --------------------------------------------------------------------------- one measurement
def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    dm = MBODataModule(args.task, batch_size=args.batch_size, seed=0)
    batches = member_batches(dm, args.members, args.batch_size, 4, torch.device("cpu"), 0)
    clock = Clock()
    ignite_wrappers(clock)
    steps = {mode: build(dm, args, mode, clock) for mode in MODES}
    out: dict = {"load_start": os.getloadavg(), "package": str(Path(lightning_mbo.__file__).parent.parent),
                 "thp": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")}
    floor: dict = {}
    for mode, step in steps.items():
        rec = MatmulRecorder(clock)
        with rec:
            step(batches[0])
        per_phase: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        cache: dict = {}
        for phase, _, shapes, strides in rec.calls:
            key = (shapes, strides)
            if key not in cache:
                cache[key] = bare_seconds(shapes, strides)
            per_phase[phase][0] += flops(shapes)
            per_phase[phase][1] += cache[key]
        floor[mode] = {k: tuple(v) for k, v in per_phase.items()}
    for step in steps.values():
        for i in range(args.warmup):
            step(batches[i % len(batches)])
    times: dict = {mode: defaultdict(list) for mode in MODES}
    for i in range(args.steps):
        for mode in (MODES if i % 2 == 0 else MODES[::-1]):
            clock.totals.clear()
            t = time.process_time()
            steps[mode](batches[i % len(batches)])
            total = time.process_time() - t
            times[mode]["step"].append(total)
            for phase in PHASES:
                times[mode][phase].append(clock.totals.get(phase, 0.0))
    out["times"] = {mode: {k: median(v) for k, v in d.items()} for mode, d in times.items()}
    out["floor"] = floor
    out["load_end"] = os.getloadavg()
    return out


# --------------------------------------------------------------------------- report
def report(label: str, res: dict) -> None:
    print(f"\n{label}: package at {res['package']}, THP_MEM_ALLOC_ENABLE={res['thp']}")
    rows = []
    for mode in MODES:
        t, fl = res["times"][mode], res["floor"][mode]
        floor_s = sum(v[1] for v in fl.values())
        gflop = sum(v[0] for v in fl.values()) / 1e9
        for phase in (*PHASES, "step"):
            if phase != "step" and t.get(phase, 0.0) == 0.0 and phase not in fl:
                continue
            f = fl.get(phase, (0, 0.0)) if phase != "step" else (gflop * 1e9, floor_s)
            rows.append([mode, phase, f"{t[phase] * 1e3:.1f}", f"{f[0] / 1e9:.2f}",
                         f"{f[1] * 1e3:.1f}" if f[1] else "", f"{t[phase] / f[1]:.2f}x" if f[1] else "",
                         f"{f[0] / f[1] / 1e9:.0f}" if f[1] else ""])
    print(table(rows, ["mode", "phase", "CPU ms", "GFLOP", "floor ms", "vs floor", "bare GFLOP/s"]))
    plain = res["times"]["plain"]["step"]
    plain_floor = sum(v[1] for v in res["floor"]["plain"].values())
    fd_flops = sum(v[0] for v in res["floor"]["fd"].values()) / sum(v[0] for v in res["floor"]["plain"].values())
    print(f"  plain step / its FLOP floor: {plain / plain_floor:.2f}x (target <= 1.3x)")
    print(f"  fd step / plain step: {res['times']['fd']['step'] / plain:.2f}x (FLOPs {fd_flops:.2f}x; target <= 2.8x)")
    print(f"  exact step / plain step: {res['times']['exact']['step'] / plain:.2f}x")
    print("  per 100 batches: " + ", ".join(f"{m} {res['times'][m]['step'] * 100:.1f} s" for m in MODES))
    print("  load average {:.2f} {:.2f} {:.2f} at start, {:.2f} {:.2f} {:.2f} at end".format(
        *res["load_start"], *res["load_end"]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.json:
        print(json.dumps(measure(args)))
        return
    print("== Training step vs. FLOP floor ==")
    print(f"model: Surrogate, {args.members} stacked members, hidden {args.hidden}, Gaussian head, {args.task}, "
          f"batch {args.batch_size}; CPU process time, 1 torch thread; medians of {args.steps} steps per mode"
          f"{' per round' if args.against else ''}; {load_line()} at start")
    if args.against is None and args.release_python is None:
        report("this tree", measure(args))
        return
    here = str(Path(__file__).resolve().parent.parent)
    shape = ["--members", str(args.members), "--batch-size", str(args.batch_size), "--hidden", *map(str, args.hidden)]
    child = [sys.executable, __file__, "--json", "--steps", str(args.steps), "--warmup", str(args.warmup),
             "--task", args.task, *shape]
    if args.release_python is not None:
        release = [args.release_python, str(Path(__file__).with_name("release_tf_step.py")), "--steps",
                   str(args.steps), "--warmup", str(args.warmup), *shape]
        runs = interleave({"release": (release, os.environ), "package": (child, {**os.environ, "PYTHONPATH": here})},
                          args.rounds, here)
        report_release(runs)
        return
    runs = interleave({"before": (child, {**os.environ, "PYTHONPATH": args.against}),
                       "after": (child, {**os.environ, "PYTHONPATH": here})}, args.rounds, here)
    for label, results in runs.items():
        merged = dict(results[-1])
        merged["times"] = {m: {k: median([x["times"][m][k] for x in results]) for k in results[0]["times"][m]}
                           for m in MODES}
        merged["load_start"] = results[0]["load_start"]
        report(f"{label} (median over {len(results)} rounds)", merged)
    print()
    for m in MODES:
        b, a = (median([x["times"][m]["step"] for x in runs[k]]) for k in ("before", "after"))
        print(f"  {m} step: before {b * 1e3:.0f} ms, after {a * 1e3:.0f} ms ({b / a:.2f}x faster)")


def interleave(commands: dict[str, tuple[list[str], dict]], rounds: int, cwd: str) -> dict[str, list[dict]]:
    """Run each command ``rounds`` times, alternating their order (a, b, b, a, ...); the JSON line each prints."""
    runs: dict[str, list[dict]] = {label: [] for label in commands}
    for r in range(rounds):
        for label in list(commands)[:: 1 if r % 2 == 0 else -1]:
            command, env = commands[label]
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd)
            if done.returncode != 0:
                raise SystemExit(f"{label} run failed ({' '.join(command[:2])}):\n{done.stderr[-2000:]}")
            runs[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
            times = runs[label][-1]["times"]
            print(f"  round {r + 1} {label}: " + ", ".join(
                f"{m} {step_seconds(times, m) * 1e3:.0f} ms" for m in times), flush=True)
    return runs


def step_seconds(times: dict, mode: str) -> float:
    """A mode's seconds per five-member batch (the package's runs give phases, the release's a number)."""
    return times[mode]["step"] if isinstance(times[mode], dict) else times[mode]


def report_release(runs: dict[str, list[dict]]) -> None:
    """Seconds per 100 five-member batches, the released TensorFlow step against this tree, medians over rounds."""
    print(f"\nreleased step: TensorFlow {runs['release'][0]['tensorflow']}, members one after another; "
          f"this tree: stacked members (medians over {len(runs['package'])} rounds)")
    rows, speedups = [], {}
    for mode in ("plain", "fd"):
        rel = median([step_seconds(x["times"], mode) for x in runs["release"]])
        pkg = median([step_seconds(x["times"], mode) for x in runs["package"]])
        speedups[mode] = rel / pkg
        rows.append([mode, f"{rel * 100:.1f}", f"{pkg * 100:.1f}", f"{rel / pkg:.2f}x", ">= 1.2x",
                     "yes" if rel / pkg >= 1.2 else "no"])
    print(table(rows, ["mode", "release s / 100 batches", "package s / 100 batches", "package faster", "target",
                       "met"]))
    rel_fd = median([step_seconds(x["times"], "fd") / step_seconds(x["times"], "plain") for x in runs["release"]])
    pkg_fd = median([step_seconds(x["times"], "fd") / step_seconds(x["times"], "plain") for x in runs["package"]])
    print(f"  IGNITE step / plain step: release {rel_fd:.2f}x, package {pkg_fd:.2f}x")
    rates = [x["matmul_gflops"] for x in runs["release"]]
    floors = [sum(v[0] for v in x["floor"]["plain"].values()) / sum(v[1] for v in x["floor"]["plain"].values())
              for x in runs["package"]]
    print(f"  bare matrix products (GFLOP/s, median): TensorFlow's (128 x 2048) x (2048 x 2048) {median(rates):.1f}, "
          f"the package's plain step's products {median(floors) / 1e9:.1f}")
    loads = [x[key][0] for r in runs.values() for x in r for key in ("load_start", "load_end")]
    print(f"  load average (1 min) during the runs: {min(loads):.2f}-{max(loads):.2f}")

if __name__ == "__main__":
    main()
