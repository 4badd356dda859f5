"""Stacked ensemble vs. the same members trained one after another.

Trains ``Surrogate(members=M)`` (one module, weights ``(M, in, out)``, one batched matmul per
layer) and ``M`` times ``Surrogate(members=1)`` one after another, for the same number of
epochs on TFBind8 through ``MBODataModule``, each with a real ``pytorch_lightning.Trainer``
(no logger, no checkpointing, no progress bar, no DesignAscent callback, validation as in a
normal run). Both are timed side by side in the same process, alternating which goes first
in each repeat; the table gives wall seconds and the ratio sequential / stacked.

A pure-torch microbenchmark of one training step (forward, per-member Gaussian NLL,
backward, Adam step; data already on the device; no Lightning) of the same two follows, so
the framework's per-step cost is visible next to the compute.

    python benchmarks/ensemble_vs_sequential.py                       # CPU: 2x512, 1 epoch
    python benchmarks/ensemble_vs_sequential.py --device cuda         # GPU: 2x2048, 5 epochs
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_device_args,
    device_line,
    median,
    member_batches,
    quiet_lightning,
    setup_device,
    table,
    timed,
    versions_line,
)

quiet_lightning()


from lightning_mbo.cli import MBOTrainer  # noqa: E402
from lightning_mbo.data.datamodule import MBODataModule  # noqa: E402
from lightning_mbo.methods.surrogate import Surrogate  # noqa: E402

CPU_HIDDEN = (512, 512)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(p, CPU_HIDDEN)
    p.add_argument("--epochs", type=int, default=None, help="default: 1 on cpu, 5 on cuda")
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of (sequential, stacked)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--task", default="TFBind8-Exact-v0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-val", action="store_true", help="switch validation off (default: on, as in a real run)")
    p.add_argument("--micro-steps", type=int, default=None,
                   help="steps per timed block of the pure-torch microbenchmark (default: 30 on cpu, 200 on cuda)")
    p.add_argument("--micro-blocks", type=int, default=5, help="timed blocks of the microbenchmark (median taken)")
    p.add_argument("--log-cost", action="store_true",
                   help="also fit both once more with Surrogate.log_dict made a no-op, to show what the per-step "
                        "logging costs")
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--skip-lightning", action="store_true")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- Lightning runs
def make_trainer(device: torch.device, epochs: int, val: bool, **extra) -> MBOTrainer:
    kw = dict(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        callbacks=[],
    )
    if not val:
        kw.update(limit_val_batches=0, num_sanity_val_steps=0)
    kw.update(extra)
    return MBOTrainer(**kw)


def fit_once(dm: MBODataModule, members: int, hidden: tuple[int, ...], seed: int, device: torch.device,
             epochs: int, val: bool, **extra) -> tuple[float, float, int]:
    """Build one surrogate and its Trainer and fit it: wall seconds (synchronised), process CPU
    seconds and optimizer steps."""
    def run() -> int:
        torch.manual_seed(seed)
        model = Surrogate(dm.input_dim, members=members, hidden=hidden)
        trainer = make_trainer(device, epochs, val, **extra)
        trainer.fit(model, datamodule=dm)
        return trainer.global_step

    return timed(run, device)


def run_sequential(dms: list[MBODataModule], hidden, seed, device, epochs, val, **extra):
    wall, cpu, steps = 0.0, 0.0, 0
    for m, dm in enumerate(dms):
        w, c, n = fit_once(dm, 1, hidden, seed + m, device, epochs, val, **extra)
        wall, cpu, steps = wall + w, cpu + c, steps + n
    return wall, cpu, steps


def run_stacked(dm: MBODataModule, members, hidden, seed, device, epochs, val, **extra):
    return fit_once(dm, members, hidden, seed, device, epochs, val, **extra)


# --------------------------------------------------------------------------- pure torch
def make_step(model: Surrogate):
    """One training step as ``Surrogate.training_step`` does it without IGNITE, minus Lightning
    (one process: the loss is the batch mean, so the batch's ``rows`` is not needed)."""
    opt = torch.optim.Adam(model.parameters(), lr=model.hparams.lr, weight_decay=model.hparams.weight_decay)

    def step(x: torch.Tensor, y: torch.Tensor, rows: int) -> None:
        opt.zero_grad()
        mean, logstd = model(x)
        losses = model.member_losses(mean, logstd, y)
        losses.sum().backward()
        opt.step()

    return step


def micro(dm, members, hidden, batch, device, steps, blocks, seed) -> dict[str, float]:
    """Median wall and CPU ms per step (one step of every member), sequential singles and stacked."""
    torch.manual_seed(seed)
    stacked = Surrogate(dm.input_dim, members=members, hidden=hidden).to(device)
    singles = []
    for m in range(members):
        torch.manual_seed(seed + m)
        singles.append(Surrogate(dm.input_dim, members=1, hidden=hidden).to(device))
    stacked_step = make_step(stacked)
    single_steps = [make_step(s) for s in singles]
    nb = 8
    stacked_batches = member_batches(dm, members, batch, nb, device, seed)
    single_batches = [member_batches(dm, 1, batch, nb, device, seed + 1 + m) for m in range(members)]

    def run_stacked_block(n: int) -> None:
        for i in range(n):
            stacked_step(*stacked_batches[i % nb])

    def run_sequential_block(n: int) -> None:
        for step, batches in zip(single_steps, single_batches, strict=True):
            for i in range(n):
                step(*batches[i % nb])

    warm = max(3, steps // 5)
    run_stacked_block(warm)
    run_sequential_block(warm)
    times = {k: [] for k in ("seq", "stk", "seq_cpu", "stk_cpu")}
    for b in range(blocks):
        order = [("seq", run_sequential_block), ("stk", run_stacked_block)]
        if b % 2:
            order.reverse()
        for name, fn in order:
            wall, cpu, _ = timed(lambda fn=fn: fn(steps), device)
            times[name].append(wall / steps * 1e3)
            times[name + "_cpu"].append(cpu / steps * 1e3)
    return {k: median(v) for k, v in times.items()}


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, hidden, width_line = setup_device(args, CPU_HIDDEN)
    epochs = args.epochs or (5 if device.type == "cuda" else 1)
    micro_steps = args.micro_steps or (200 if device.type == "cuda" else 30)
    val = not args.no_val
    M = args.members

    dm = MBODataModule(args.task, batch_size=args.batch_size, seed=args.seed)
    dms = [MBODataModule(args.task, batch_size=args.batch_size, seed=args.seed + m) for m in range(M)]
    n_train = len(dm.y) - dm.n_val
    steps_per_epoch = math.ceil(n_train / args.batch_size)

    print("== stacked ensemble vs. sequential single surrogates ==")
    print(f"device:  {device_line(device)}")
    print(f"version: {versions_line()}")
    print(f"task:    {args.task}: {n_train} training rows, {dm.n_val} validation rows, batch {args.batch_size} "
          f"-> {steps_per_epoch} steps/epoch; input dim {dm.input_dim}")
    print(f"model:   Surrogate, Gaussian head, leaky-ReLU, width {width_line}")
    print(f"run:     members {M}, epochs {epochs}, repeats {args.repeats}, validation {'on' if val else 'off'}")
    print(flush=True)

    cpu = device.type == "cpu"
    lightning = None
    if not args.skip_lightning:
        # Warm-up (CUDA context, cuBLAS handles, allocator, Lightning's first-use imports).
        run_stacked(dm, M, hidden, args.seed, device, 1, val, limit_train_batches=3, limit_val_batches=1)
        run_sequential(dms[:1], hidden, args.seed, device, 1, val, limit_train_batches=3, limit_val_batches=1)

        res_all = {"seq": [], "stk": []}
        for r in range(args.repeats):
            order = ["seq", "stk"] if r % 2 == 0 else ["stk", "seq"]
            res = {}
            for which in order:
                if which == "seq":
                    res[which] = run_sequential(dms, hidden, args.seed, device, epochs, val)
                else:
                    res[which] = run_stacked(dm, M, hidden, args.seed, device, epochs, val)
                res_all[which].append(res[which])
            expect = epochs * steps_per_epoch
            if res["stk"][2] != expect or res["seq"][2] != M * expect:
                print(f"  warning: optimizer steps stacked {res['stk'][2]}, sequential {res['seq'][2]}; expected "
                      f"{expect} and {M * expect}")
            print(f"  repeat {r} ({'->'.join(order)}): sequential {res['seq'][0]:.2f} s, stacked {res['stk'][0]:.2f} s",
                  flush=True)
        rows = []
        for r in range(args.repeats):
            (ws, cs, _), (wk, ck, _) = res_all["seq"][r], res_all["stk"][r]
            order = "seq->stk" if r % 2 == 0 else "stk->seq"
            row = [str(r), order, f"{ws:.2f}", f"{wk:.2f}", f"{ws / wk:.2f}x"]
            if cpu:
                row += [f"{cs:.2f}", f"{ck:.2f}", f"{cs / ck:.2f}x"]
            rows.append(row)
        med = {k: [median([t[i] for t in v]) for i in (0, 1)] for k, v in res_all.items()}
        row = ["median", "", f"{med['seq'][0]:.2f}", f"{med['stk'][0]:.2f}", f"{med['seq'][0] / med['stk'][0]:.2f}x"]
        if cpu:
            row += [f"{med['seq'][1]:.2f}", f"{med['stk'][1]:.2f}", f"{med['seq'][1] / med['stk'][1]:.2f}x"]
        rows.append(row)
        lightning = med
        print()
        print(f"Lightning Trainer, {epochs} epochs, seconds (model + Trainer construction + fit), {device.type}, "
              f"width {width_line.split()[0]}:")
        header = ["repeat", "order", f"seq {M}x1 wall", f"stacked {M} wall", "seq/stacked"]
        if cpu:
            header += [f"seq {M}x1 CPU", f"stacked {M} CPU", "seq/stacked CPU"]
        print(table(rows, header))
        print()

    if args.log_cost and not args.skip_lightning:
        orig = Surrogate.log_dict
        Surrogate.log_dict = lambda self, *a, **k: None
        try:
            nolog = {"seq": run_sequential(dms, hidden, args.seed, device, epochs, val),
                     "stk": run_stacked(dm, M, hidden, args.seed, device, epochs, val)}
        finally:
            Surrogate.log_dict = orig
        i = 1 if cpu else 0
        total = epochs * steps_per_epoch
        rows = []
        for k, name in (("seq", f"sequential {M}x1"), ("stk", f"stacked {M}")):
            with_log, without = lightning[k][i], nolog[k][i]
            rows.append([name, f"{with_log:.2f}", f"{without:.2f}", f"{(with_log - without) / total * 1e3:.2f}"])
        print(f"Cost of Surrogate.training_step's self.log_dict calls ({'CPU' if cpu else 'wall'} s; one fit each, "
              f"logger=False):")
        print(table(rows, ["", "with logging", "log_dict no-op", "ms per step of all members"]))
        print()

    if not args.skip_micro:
        mi = micro(dm, M, hidden, args.batch_size, device, micro_steps, args.micro_blocks, args.seed)
        key = "_cpu" if cpu else ""
        what = "CPU" if cpu else "wall"
        rows = [["pure torch (no Lightning, data on device)", f"{mi['seq' + key]:.2f}", f"{mi['stk' + key]:.2f}",
                 f"{mi['seq' + key] / mi['stk' + key]:.2f}x"]]
        if lightning is not None:
            total = epochs * steps_per_epoch
            i = 1 if cpu else 0
            l_seq, l_stk = lightning["seq"][i] / total * 1e3, lightning["stk"][i] / total * 1e3
            rows.append(["Lightning fit, all-in (time / train steps)", f"{l_seq:.2f}", f"{l_stk:.2f}",
                         f"{l_seq / l_stk:.2f}x"])
            rows.append(["  difference = framework + data + validation", f"{l_seq - mi['seq' + key]:+.2f}",
                         f"{l_stk - mi['stk' + key]:+.2f}", ""])
        print(f"Per training step of all {M} members, median {what} ms (microbenchmark: {args.micro_blocks} blocks "
              f"of {micro_steps} steps):")
        print(table(rows, ["", f"sequential {M}x1", f"stacked {M}", "seq/stacked"]))
        print("  sequential = the M single-member steps one after another (M optimizer steps).")
        if cpu:
            print("  CPU = process_time of this process (robust to other processes sharing the cores);"
                  f" pure-torch wall ms: sequential {mi['seq']:.2f}, stacked {mi['stk']:.2f}.")


if __name__ == "__main__":
    main()
