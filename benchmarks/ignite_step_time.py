"""Time per training step: plain vs. IGNITE (finite difference) vs. IGNITE (exact).

Each step is the package's own ``Surrogate.training_step`` (forward, per-member Gaussian NLL,
backward, ``GradNormConstraint.add_penalty``, ``update_lambda``, Adam step), called directly
with the Lightning plumbing it touches replaced by its single-process equivalent
(``optimizers()`` -> the module's own Adam from ``configure_optimizers()``,
``manual_backward(l)`` -> ``l.backward()``, ``log``/``log_dict`` -> no-op, ``_reduce()`` ->
None), so whatever the package's step does is what is timed, without the data loader and
loop. Steps run on batches already on the device, after a warm-up, with the device
synchronised around every step; the three modes are interleaved in rounds and the median
over all timed steps is reported, for one surrogate and for the stacked ensemble.

Two further tables explain the ratios:

* a breakdown of the step into its parts (data-loss forward+backward, Adam, the penalty);
* a what-if (NOT the package's code) with two rearrangements of the same math that drop
  avoidable passes: ``fd-reuse`` takes ``∇h(ω)`` from the data-loss forward's graph (one
  forward less), ``exact-fused`` back-propagates ``L_D + Σ_m λ_m ρ ||∇h_m||`` in one double
  backward (one forward and one backward less); their gradients are checked against the
  package's.

    python benchmarks/ignite_step_time.py                  # CPU, 2x512
    python benchmarks/ignite_step_time.py --device cuda    # GPU, 2x2048 (published)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    device_line,
    median,
    quantile,
    quiet_lightning,
    resolve_device,
    resolve_hidden,
    sync,
    table,
    versions_line,
)

quiet_lightning()

from lightning_mbo.data.datamodule import MBODataModule  # noqa: E402
from lightning_mbo.functional.gradnorm import grad_h, member_norms, norm_gradient_finite_difference  # noqa: E402
from lightning_mbo.methods.ignite import Ignite  # noqa: E402
from lightning_mbo.methods.surrogate import Surrogate  # noqa: E402

CPU_HIDDEN = (512, 512)
MODES = ("plain", "fd", "exact")
TARGETS = {"fd": 1.5, "exact": 2.5}
N_BATCHES = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help=f"hidden widths; default 2048 2048 (published) on cuda, {CPU_HIDDEN[0]} {CPU_HIDDEN[1]} on cpu")
    p.add_argument("--members", type=int, nargs="+", default=[1, 5], help="ensemble sizes to time")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default: 40 on cpu, 300 on cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per mode first (default: 5 cpu, 30 cuda)")
    p.add_argument("--rounds", type=int, default=8, help="the modes are interleaved in this many rounds")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--task", default="TFBind8-Exact-v0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads; default 1 on cpu (several threads stall whenever another process "
                        "shares the cores), torch's default on cuda")
    p.add_argument("--no-breakdown", action="store_true", help="skip the breakdown and what-if tables")
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


def package_step(model: Surrogate) -> Callable[[tuple[torch.Tensor, torch.Tensor], int], None]:
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


def make_batches(dm: MBODataModule, members: int, batch: int, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(N_BATCHES):
        idx = torch.randint(0, len(dm.y), (members, batch), generator=g)
        out.append((dm.x[idx].to(device), dm.y[idx].to(device)))
    return out


def time_steps(step, batches, n: int, device: torch.device, start: int = 0) -> tuple[list[float], list[float]]:
    """Wall ms and process-CPU ms of each of ``n`` steps, the device synchronised around every one."""
    wall, cpu = [], []
    for i in range(start, start + n):
        b = batches[i % N_BATCHES]
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        step(b, i)
        sync(device)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return wall, cpu


def time_modes(steps: dict[str, Callable], batches, n: int, warmup: int, rounds: int, device):
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


# --------------------------------------------------------------------------- breakdown
def breakdown(dm, members, hidden, device, batches, n: int, warmup: int, seed: int) -> dict[str, float]:
    """Median ms of the parts of a step, on the same kind of model."""
    torch.manual_seed(seed)
    models = {mode: build(dm, members, hidden, mode, device, seed) for mode in MODES}
    plain = models["plain"]
    params = {k: [p for p in m.parameters() if p.requires_grad] for k, m in models.items()}
    opt = torch.optim.Adam(plain.parameters(), lr=plain.hparams.lr)

    def data_fwd_bwd(b, i):
        x, y = b
        for p in params["plain"]:
            p.grad = None
        mean, logstd = plain(x)
        plain.member_losses(mean, logstd, y).sum().backward()

    def forward_only(b, i):
        x, _ = b
        plain(x)

    def adam(b, i):
        opt.step()

    def penalty(mode):
        model, ps = models[mode], params[mode]

        def fn(b, i):
            x, _ = b
            for p in ps:
                p.grad = None
            model.constraint.add_penalty(lambda: model(x)[0].mean(-1), ps, None)

        return fn

    parts = {
        "forward (graph built)": forward_only,
        "fwd+bwd data loss": data_fwd_bwd,
        "Adam step": adam,
        "add_penalty fd": penalty("fd"),
        "add_penalty exact": penalty("exact"),
    }
    data_fwd_bwd(batches[0], 0)  # give Adam gradients to step with
    out = {}
    for name, fn in parts.items():
        time_steps(fn, batches, warmup, device)
        w, c = time_steps(fn, batches, n, device)
        out[name] = (median(w), median(c))
    return out


# --------------------------------------------------------------------------- what-if
def whatif_steps(model: Surrogate, mode: str) -> Callable:
    """The same update as the package's step with fewer passes (NOT the package's code)."""
    opt = torch.optim.Adam(model.parameters(), lr=model.hparams.lr, weight_decay=model.hparams.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    c = model.constraint
    s = c.settings

    def fd_reuse(b, i):
        x, y = b
        opt.zero_grad()
        mean, logstd = model(x)
        losses = model.member_losses(mean, logstd, y)
        g = torch.autograd.grad(mean.mean(-1).sum(), params, retain_graph=True, allow_unused=True)
        g = [torch.zeros_like(p) if t is None else t for p, t in zip(params, g, strict=True)]
        losses.sum().backward()
        norms, est = norm_gradient_finite_difference(lambda: model(x)[0].mean(-1), params, r=s.r, grads=g)
        scale = (c.lmbda * s.rho).detach()
        for p, e in zip(params, est, strict=True):
            p.grad.add_(e * scale.view(-1, *([1] * (e.dim() - 1))).to(e.dtype))
        c.update_lambda(norms)
        opt.step()

    def exact_fused(b, i):
        x, y = b
        opt.zero_grad()
        mean, logstd = model(x)
        losses = model.member_losses(mean, logstd, y)
        g = grad_h(mean.mean(-1), params, create_graph=True)
        norms = member_norms(g)
        scale = (c.lmbda * s.rho).detach()
        (losses.sum() + (scale * norms).sum()).backward()
        c.update_lambda(norms.detach())
        opt.step()

    def fd_lean(b, i):
        # fd-reuse plus a lean parameter-sized tail: the 1/r, the mask of members with
        # ||grad h|| = 0 and lambda*rho folded into one per-member coefficient, no zeros_like /
        # where / extra copies, the result accumulated straight into .grad.
        x, y = b
        opt.zero_grad()
        mean, logstd = model(x)
        losses = model.member_losses(mean, logstd, y)
        g = torch.autograd.grad(mean.mean(-1).sum(), params, retain_graph=True, allow_unused=True)
        g = [torch.zeros_like(p) if t is None else t for p, t in zip(params, g, strict=True)]
        losses.sum().backward()
        members = g[0].shape[0]
        norms = torch.stack([t.reshape(members, -1).pow(2).sum(1) for t in g]).sum(0).sqrt()
        active = norms > 0
        shift = torch.where(active, s.r / torch.where(active, norms, 1.0), 0.0)
        coef = torch.where(active, c.lmbda * s.rho / s.r, 0.0)
        view = lambda v, t: v.view(-1, *([1] * (t.dim() - 1)))
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p, t in zip(params, g, strict=True):
                    p.addcmul_(t, view(shift, t))
            gs = torch.autograd.grad(model(x)[0].mean(-1).sum(), params, allow_unused=True)
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, saved)
        with torch.no_grad():
            for p, a, t in zip(params, gs, g, strict=True):
                if a is not None:
                    p.grad.addcmul_(a.sub_(t), view(coef, t))
                else:
                    p.grad.addcmul_(t, view(coef, t), value=-1.0)
        c.update_lambda(norms)
        opt.step()

    fn = {"fd": fd_reuse, "exact": exact_fused, "fd-lean": fd_lean}[mode]
    fn.opt = opt
    return fn


def gradient_check(dm, members, hidden, device, batch, seed) -> dict[str, float]:
    """Relative difference between the what-if's and the package's gradient (before the Adam step)."""
    out = {}
    x, y = batch
    for mode in ("fd", "fd-lean", "exact"):
        grads = []
        for variant in ("package", "whatif"):
            model = build(dm, members, hidden, mode.split("-")[0], device, seed)
            ps = [p for p in model.parameters() if p.requires_grad]
            if variant == "package":
                step = package_step(model)
                opt = model.optimizers()
            else:
                step = whatif_steps(model, mode)
                opt = step.opt
            # capture .grad just before the optimizer step, in place of the step
            captured = []
            opt.step = lambda *a, _c=captured, _ps=ps, **k: _c.append([p.grad.detach().clone() for p in _ps])
            step((x, y), 0)
            grads.append(torch.cat([t.flatten() for t in captured[0]]))
        a, b = grads
        out[mode] = ((a - b).norm() / b.norm()).item()
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    hidden, width_line = resolve_hidden(args.hidden, device, CPU_HIDDEN)
    cuda = device.type == "cuda"
    n = args.steps or (300 if cuda else 40)
    warmup = args.warmup if args.warmup is not None else (30 if cuda else 5)
    dm = MBODataModule(args.task, batch_size=args.batch_size, seed=args.seed)
    ig = Ignite()

    print("== IGNITE training-step time ==")
    print(f"device:  {device_line(device)}")
    print(f"version: {versions_line()}")
    print(f"model:   Surrogate, Gaussian head, leaky-ReLU, width {width_line}, input dim {dm.input_dim}, "
          f"batch {args.batch_size}")
    print(f"ignite:  rho {ig.rho}, eps {ig.eps}, lambda0 {ig.lambda_init}, eta_lambda {ig.lambda_lr}, r {ig.r}")
    print(f"timing:  {n} timed steps per mode in {args.rounds} interleaved rounds after {warmup} warm-up steps; "
          f"device synchronised around each step; median (p10-p90)")
    print(flush=True)

    rows, extra = [], {}
    for members in args.members:
        batches = make_batches(dm, members, args.batch_size, device, args.seed + members)
        steps = {mode: package_step(build(dm, members, hidden, mode, device, args.seed)) for mode in MODES}
        wall, cpu = time_modes(steps, batches, n, warmup, args.rounds, device)
        base, base_cpu = median(wall["plain"]), median(cpu["plain"])
        for mode in MODES:
            t = wall[mode]
            ratio = median(t) / base
            target = TARGETS.get(mode)
            row = [str(members), mode, f"{median(t):.2f}", f"{quantile(t, 0.1):.2f}-{quantile(t, 0.9):.2f}",
                   f"{ratio:.2f}x", f"<= {target}x" if target else "",
                   ("yes" if ratio <= target else "NO") if target else ""]
            if not cuda:
                row += [f"{median(cpu[mode]):.2f}", f"{median(cpu[mode]) / base_cpu:.2f}x"]
            rows.append(row)
        print(f"  members {members}: " + ", ".join(f"{m} {median(wall[m]):.2f} ms" for m in MODES), flush=True)
        if not args.no_breakdown:
            bd = breakdown(dm, members, hidden, device, batches, max(10, n // 2), warmup, args.seed)
            wi_steps = {"plain": package_step(build(dm, members, hidden, "plain", device, args.seed))}
            for mode in ("fd", "fd-lean", "exact"):
                wi_steps[mode] = whatif_steps(build(dm, members, hidden, mode.split("-")[0], device, args.seed), mode)
            wi = time_modes(wi_steps, batches, n, warmup, args.rounds, device)
            check = gradient_check(dm, members, hidden, device, batches[0], args.seed)
            extra[members] = (bd, wi, check)

    print()
    print(f"Training step (the package's Surrogate.training_step), {device.type}, width {width_line.split()[0]}:")
    header = ["members", "mode", "wall ms", "p10-p90 ms", "vs plain", "target", "meets"]
    if not cuda:
        header += ["CPU ms", "CPU vs plain"]
    print(table(rows, header))
    if not cuda:
        print("  wall: perf_counter; CPU: process_time of this process (less sensitive to other processes on the")
        print("  same cores; with more than one torch thread it also counts the threads' spin-waiting).")

    if extra:
        col = 1 if not cuda else 0
        what = "CPU" if not cuda else "wall"
        print()
        print(f"Breakdown, median {what} ms (unit = one data-loss forward+backward):")
        brows = []
        for members, (bd, _, _) in extra.items():
            u = bd["fwd+bwd data loss"][col]
            for name, v in bd.items():
                brows.append([str(members), name, f"{v[col]:.2f}", f"{v[col] / u:.2f}"])
        print(table(brows, ["members", "part", "ms", "units"]))
        print()
        print(f"What-if (NOT the package's code): the same update with avoidable passes removed, median {what} ms")
        wrows = []
        for members, (_, wi, check) in extra.items():
            t = wi[col]
            base = median(t["plain"])
            wrows.append([str(members), "plain (package)", f"{base:.2f}", "1.00x", ""])
            wrows.append([str(members), "fd-reuse: grad h from the data forward", f"{median(t['fd']):.2f}",
                          f"{median(t['fd']) / base:.2f}x", f"{check['fd']:.1e}"])
            wrows.append([str(members), "fd-lean: fd-reuse + lean elementwise tail", f"{median(t['fd-lean']):.2f}",
                          f"{median(t['fd-lean']) / base:.2f}x", f"{check['fd-lean']:.1e}"])
            wrows.append([str(members), "exact-fused: one double backward", f"{median(t['exact']):.2f}",
                          f"{median(t['exact']) / base:.2f}x", f"{check['exact']:.1e}"])
        print(table(wrows, ["members", "variant", "ms", "vs plain", "grad rel. diff vs package"]))


if __name__ == "__main__":
    main()
