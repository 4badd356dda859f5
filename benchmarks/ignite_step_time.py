"""Time per training step: plain vs. IGNITE (finite difference) vs. IGNITE (exact).

Each step is the package's own ``Surrogate.training_step`` (forward, per-member Gaussian NLL,
then either ``manual_backward`` (plain) or ``GradNormConstraint.backward`` and
``update_lambda`` (IGNITE), then the Adam step), called directly on ``(x, y, rows)`` batches
as the datamodule yields them, with the Lightning plumbing it touches replaced by its
single-process equivalent (``optimizers()`` -> the module's own Adam from
``configure_optimizers()``, ``manual_backward(l)`` -> ``l.backward()``, ``log``/``log_dict`` ->
no-op, ``_reduce()`` -> None), so whatever the package's step does is what is timed, without
the data loader and loop. Steps run on batches already on the device, after a warm-up, with the
device synchronised around every step; the three modes are interleaved in rounds and the
median over all timed steps is reported, for one surrogate and for the stacked ensemble.

    python benchmarks/ignite_step_time.py                  # CPU, 2x512
    python benchmarks/ignite_step_time.py --device cuda    # GPU, 2x2048 (published)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_device_args,
    device_line,
    load_line,
    median,
    member_batches,
    quantile,
    quiet_lightning,
    setup_device,
    table,
    timed,
    versions_line,
)

quiet_lightning()

from lightning_mbo.data.datamodule import MBODataModule  # noqa: E402
from lightning_mbo.methods.ignite import Ignite  # noqa: E402
from lightning_mbo.methods.surrogate import Surrogate  # noqa: E402

CPU_HIDDEN = (512, 512)
MODES = ("plain", "fd", "exact")
TARGETS = {"fd": 1.5, "exact": 2.5}
N_BATCHES = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(p, CPU_HIDDEN)
    p.add_argument("--members", type=int, nargs="+", default=[1, 5], help="ensemble sizes to time")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default: 40 on cpu, 300 on cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per mode first (default: 5 cpu, 30 cuda)")
    p.add_argument("--rounds", type=int, default=8, help="the modes are interleaved in this many rounds")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--task", default="TFBind8-Exact-v0")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the package's step
def build(dm: MBODataModule, members: int, hidden, mode: str, device: torch.device, seed: int) -> Surrogate:
    ignite = None
    if mode == "fd":
        ignite = Ignite(grad_mode="finite_difference")
    elif mode == "exact":
        ignite = Ignite(grad_mode="exact")
    torch.manual_seed(seed)
    return Surrogate(dm.input_dim, members=members, hidden=hidden, ignite=ignite).to(device)


Batch = tuple[torch.Tensor, torch.Tensor, int]


def package_step(model: Surrogate) -> Callable[[Batch, int], None]:
    """``model.training_step`` with its Lightning calls bound to single-process equivalents."""
    opt = model.configure_optimizers()
    if isinstance(opt, (list, tuple)):
        opt = opt[0][0]
    model.optimizers = lambda *a, **k: opt
    model.manual_backward = lambda loss, *a, **k: loss.backward(*a, **k)
    model.log = lambda *a, **k: None
    model.log_dict = lambda *a, **k: None
    model._reduce = lambda: None
    model.train()
    return model.training_step


def step_flops(step, batch: Batch) -> int:
    """Matrix-product FLOPs of one step (torch's FlopCounterMode): the work that bounds the
    step time once the device is compute-bound rather than launch- or Python-bound."""
    with FlopCounterMode(display=False) as counter:
        step(batch, 0)
    return counter.get_total_flops()


def time_steps(step, batches: list[Batch], n: int, device: torch.device,
               start: int = 0) -> tuple[list[float], list[float]]:
    """Wall ms and process-CPU ms of each of ``n`` steps, the device synchronised around every one."""
    wall, cpu = [], []
    for i in range(start, start + n):
        w, c, _ = timed(lambda i=i: step(batches[i % len(batches)], i), device)
        wall.append(w * 1e3)
        cpu.append(c * 1e3)
    return wall, cpu


def time_modes(steps: dict[str, Callable], batches: list[Batch], n: int, warmup: int, rounds: int, device):
    """Per-step wall and CPU ms of every mode, the modes interleaved in ``rounds`` rounds."""
    for step in steps.values():
        time_steps(step, batches, warmup, device)
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    per_round = max(1, n // rounds)
    counter = warmup
    for r in range(rounds):
        names = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in names:
            w, c = time_steps(steps[name], batches, per_round, device, start=counter)
            wall[name] += w
            cpu[name] += c
        counter += per_round
    return wall, cpu


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, hidden, width_line = setup_device(args, CPU_HIDDEN)
    cuda = device.type == "cuda"
    n = args.steps or (300 if cuda else 40)
    warmup = args.warmup if args.warmup is not None else (30 if cuda else 5)
    per_round = max(1, n // args.rounds)
    dm = MBODataModule(args.task, batch_size=args.batch_size, seed=args.seed)
    ig = Ignite()

    print("== IGNITE training-step time ==")
    print(f"device:  {device_line(device)}")
    print(f"version: {versions_line()}")
    print(f"model:   Surrogate, Gaussian head, leaky-ReLU, width {width_line}, input dim {dm.input_dim}, "
          f"batch {args.batch_size}")
    print(f"ignite:  rho {ig.rho}, eps {ig.eps}, lambda0 {ig.lambda_init}, eta_lambda {ig.lambda_lr}, r {ig.r}; "
          f"GradNormConstraint.backward (grad h from the data forward; exact: one backward)")
    print(f"timing:  {per_round * args.rounds} timed steps per mode in {args.rounds} interleaved rounds after "
          f"{warmup} warm-up steps; device synchronised around each step; median (p10-p90)")
    print(flush=True)

    rows = []
    for members in args.members:
        batches = member_batches(dm, members, args.batch_size, N_BATCHES, device, args.seed + members)
        steps = {mode: package_step(build(dm, members, hidden, mode, device, args.seed)) for mode in MODES}
        flops = {mode: step_flops(steps[mode], batches[0]) for mode in MODES}
        wall, cpu = time_modes(steps, batches, n, warmup, args.rounds, device)
        base, base_cpu = median(wall["plain"]), median(cpu["plain"])
        for mode in MODES:
            t = wall[mode]
            ratio = median(t) / base
            target = TARGETS.get(mode)
            row = [str(members), mode, f"{median(t):.2f}", f"{quantile(t, 0.1):.2f}-{quantile(t, 0.9):.2f}",
                   f"{ratio:.2f}x", f"<= {target}x" if target else "",
                   ("yes" if ratio <= target else "NO") if target else "",
                   f"{flops[mode] / 1e9:.3g}", f"{flops[mode] / flops['plain']:.2f}x"]
            if not cuda:
                row += [f"{median(cpu[mode]):.2f}", f"{median(cpu[mode]) / base_cpu:.2f}x"]
            rows.append(row)
        print(f"  members {members}: " + ", ".join(f"{m} {median(wall[m]):.2f} ms" for m in MODES), flush=True)

    print()
    print(f"Training step (the package's Surrogate.training_step), {device.type}, width {width_line.split()[0]}:")
    header = ["members", "mode", "wall ms", "p10-p90 ms", "vs plain", "target", "meets", "GFLOP", "FLOPs vs plain"]
    if not cuda:
        header += ["CPU ms", "CPU vs plain"]
    print(table(rows, header))
    if not cuda:
        print("  wall: perf_counter; CPU: process_time of this process (less sensitive to other processes on the")
        print("  same cores; with more than one torch thread it also counts the threads' spin-waiting).")
        print(f"  {load_line()} at the end")
    print("  GFLOP: matrix-product FLOPs of one step (torch.utils.flop_counter). 'FLOPs vs plain' is the ratio a")
    print("  compute-bound step approaches; while kernel launches and Python dominate, the measured ratio follows")
    print("  the number of operations instead.")


if __name__ == "__main__":
    main()
