"""Tri-mentoring design ascent: the per-candidate ``higher`` backend against the ``batched`` one.

The faithful TFBind8 ascent (Chen et al., NeurIPS 2023, released code): 128 candidates, 100 Adam steps, each candidate
with its own copies of the three proxies, mentored before every step; the outer MSE of the
soft-label step runs over the WHOLE visible training set (``datamodule.x``, 32,898 rows).
``TriMentoring(backend="higher")`` mentors one candidate and one proxy at a time with
``higher`` (the released algorithm); ``backend="batched"`` mentors all copies at once with
``torch.func``. Both run side by side in one process, on the same pre-trained proxies, from
the same starting designs, with the same neighbourhood noise; the script checks that they end
at the same designs and per-step statistics, then times them. Proxy pre-training (the three
proxies stacked in one module, Lightning Trainer, validation on) is timed per epoch first.

The higher loop costs the same for every candidate and step, so it is timed on a few
candidates and steps and its cost per candidate-step is extrapolated to 128 x 100. The
batched backend is timed on the same few (equal work) and, separately, on ``--candidates`` x
``--steps`` (128 x 100 on cuda by default; fewer steps on CPU), extrapolated linearly in the
steps (and in the candidates, if fewer than 128). What is measured and what is extrapolated
is printed. On CPU the width is reduced (``--hidden``; published 2x2048).

Cost model: every mentored copy evaluates the outer MSE over all N rows every step. The
released code forms its full gradient, about 6 N P FLOPs (P = parameters of one proxy):
128 x 3 x 100 copy-steps make ~3e16 FLOPs at 2x2048. The batched backend needs only the
gradient's inner products with the K points' parameter gradients (``outer_dot``): a forward
and a backward signal pass, about 4 N P FLOPs. ``--precisions`` times it with the large
products in float32 (the released arithmetic), TF32 and bfloat16, side by side.

    python benchmarks/tri_mentoring_backends.py                   # CPU: 2x64, extrapolated
    python benchmarks/tri_mentoring_backends.py --device cuda     # GPU: 2x2048
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_device_args,
    device_line,
    load_line,
    median,
    quiet_lightning,
    setup_device,
    sync,
    table,
    timed,
    versions_line,
)

quiet_lightning()

import pytorch_lightning as pl  # noqa: E402

from lightning_mbo.cli import MBOTrainer  # noqa: E402
from lightning_mbo.data.datamodule import MBODataModule  # noqa: E402
from lightning_mbo.methods.tri_mentoring import TriMentoring  # noqa: E402
from lightning_mbo.search import gradient_ascent  # noqa: E402

CPU_HIDDEN = (64, 64)
FULL_CANDIDATES, FULL_STEPS = 128, 100  # the protocol's candidates and TFBind8's ascent steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(p, CPU_HIDDEN, "proxy hidden widths")
    p.add_argument("--candidates", type=int, default=FULL_CANDIDATES,
                   help="candidates of the batched run (default 128, the protocol's)")
    p.add_argument("--steps", type=int, default=None,
                   help="ascent steps of the batched run (default: 100 on cuda, 3 on cpu; extrapolated to 100)")
    p.add_argument("--higher-candidates", type=int, default=8,
                   help="candidates of the side-by-side run of both backends (default 8)")
    p.add_argument("--higher-steps", type=int, default=None,
                   help="ascent steps of the side-by-side run (default: 10 on cuda, 5 on cpu)")
    p.add_argument("--data-chunk", type=int, default=None,
                   help="TriMentoring.data_chunk: training rows per chunk of the batched outer-MSE gradient; "
                        "default: per run, so that one (copies, rows, width) float32 activation stays under "
                        "24 MiB on cpu (larger ones go through mmap/munmap and page faults on every op) and "
                        "4 GiB on cuda; 0: TriMentoring's own default (data_chunk null: sized by the package, "
                        "about 8 MiB per activation on cpu, a quarter of the free memory on cuda)")
    p.add_argument("--precisions", nargs="+", default=None, choices=["float32", "tf32", "bfloat16"],
                   help="TriMentoring.outer_precision values for the batched run at --candidates x --steps, "
                        "side by side (default: float32 tf32 bfloat16 on cuda, float32 on cpu, where tf32 "
                        "does nothing)")
    p.add_argument("--pretrain-epochs", type=int, default=3, help="proxy pre-training epochs to time (0: skip)")
    p.add_argument("--max-samples", type=int, default=None,
                   help="visible rows (default: all of the task's, 32,898 for TFBind8)")
    p.add_argument("--task", default="TFBind8-Exact-v0")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- helpers
def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB allocated (peak)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB RSS (process peak so far)"


def proxy_params(input_dim: int, hidden: tuple[int, ...]) -> int:
    sizes = [input_dim, *hidden, 1]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


class EpochTimer(pl.Callback):
    """Wall seconds of every training epoch, its validation included."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._t0 = device, [], 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(self.device)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(self.device)
        self.seconds.append(time.perf_counter() - self._t0)


def pretrain(dm: MBODataModule, hidden: tuple[int, ...], epochs: int, device: torch.device, seed: int):
    torch.manual_seed(seed)
    model = TriMentoring(dm.input_dim, hidden=hidden)
    timer = EpochTimer(device)
    if epochs > 0:
        trainer = MBOTrainer(
            max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=[device.index or 0] if device.type == "cuda" else 1,
        )
        trainer.fit(model, datamodule=dm)
    return model.to(device).eval(), timer.seconds


def ascend(proxies: TriMentoring, backend: str, dm: MBODataModule, x0: torch.Tensor, steps: int,
           data_chunk: int | None, device: torch.device, precision: str = "float32"):
    """One design ascent exactly as DesignAscent runs it, with this backend, timed (wall and process CPU)."""
    model = TriMentoring(dm.input_dim, hidden=proxies.hparams.hidden, backend=backend, outer_precision=precision)
    model.data_chunk = data_chunk
    model.load_state_dict(proxies.state_dict())
    model = model.to(device).eval()
    data = dm.search_data()
    cfg = model.search_defaults(data)

    def run():
        search = model.search_objective(x0, data, torch.arange(len(x0), device=device), len(x0))
        return gradient_ascent(x0, search.score, steps, cfg.lr, cfg.optimizer, search.before_step)

    wall, cpu, result = timed(run, device)
    return wall, cpu, result, result.stats


def auto_chunk(requested: int | None, candidates: int, hidden: tuple[int, ...], n: int,
               device: torch.device) -> int | None:
    """Rows per chunk of the outer MSE for ``candidates`` x 3 proxy copies (see ``--data-chunk``)."""
    if requested is not None:
        return requested or None
    budget = 4 * 2**30 if device.type == "cuda" else 24 * 2**20
    rows = budget // (4 * 3 * candidates * max(hidden))
    return None if rows >= n else max(64, int(rows))


def fmt_s(s: float) -> str:
    return f"{s:.1f}" if s < 1000 else f"{s:.0f}"


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, hidden, width_line = setup_device(args, CPU_HIDDEN)
    cuda = device.type == "cuda"
    steps_b = args.steps or (FULL_STEPS if cuda else 3)
    cands_b = args.candidates
    cands_h = args.higher_candidates
    steps_h = args.higher_steps or (10 if cuda else 5)

    dm = MBODataModule(args.task, max_samples=args.max_samples, val_size=0.1, batch_size=128, seed=args.seed)
    n, d = dm.x.shape
    p_count = proxy_params(d, hidden)
    flop_per_copy_step = 6 * n * p_count  # the released code's outer gradient
    flop_batched = 4 * n * p_count  # outer_dot: forward + backward signal, no weight-gradient product

    print("== Tri-mentoring ascent: higher (per candidate) vs. batched (torch.func) backend ==")
    print(f"device:  {device_line(device)}")
    print(f"version: {versions_line()}")
    print(f"task:    {args.task}: outer MSE over all N = {n} visible rows (datamodule.x), input dim {d}")
    print(f"proxies: 3 x ReLU MLP, width {width_line}, {p_count:,} parameters each")
    chunk_h = auto_chunk(args.data_chunk, cands_h, hidden, n, device)
    chunk_b = auto_chunk(args.data_chunk, cands_b, hidden, n, device)
    print(f"ascent:  Adam lr 0.1; K 10, delta 0.1, beta 1e-3, lambda_s 0.1 (released); batched data_chunk "
          f"{chunk_h or 'null (package default)'} rows with {cands_h} candidates, "
          f"{chunk_b or 'null (package default)'} with {cands_b}")
    print(f"cost:    outer MSE ~6 N P = {flop_per_copy_step:.2e} FLOPs per proxy copy per step; "
          f"{FULL_CANDIDATES} x 3 x {FULL_STEPS} = {FULL_CANDIDATES * 3 * FULL_STEPS * flop_per_copy_step:.1e} FLOPs "
          f"for the full ascent (if every copy is mentored every step)")
    print(flush=True)

    # ---- pre-training
    proxies, epoch_s = pretrain(dm, hidden, args.pretrain_epochs, device, args.seed)
    if epoch_s:
        per_epoch = median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s)
        print(f"pre-training (3 proxies stacked, batch 128, {len(dm.y) - dm.n_val} training rows each, validation on):")
        print(f"  epochs measured: {', '.join(f'{s:.2f}' for s in epoch_s)} s; per epoch {per_epoch:.2f} s "
              f"({'median after the first' if len(epoch_s) > 1 else 'one epoch'})")
        print(f"  extrapolated: 200 epochs = {fmt_s(200 * per_epoch)} s for all three proxies")
    else:
        print("pre-training: skipped (--pretrain-epochs 0): untrained proxies")
    print(f"  memory: {peak_memory(device)}", flush=True)
    print()

    x0_all = dm.starting_designs(max(cands_b, cands_h)).to(device)

    # ---- side by side on the same candidates: same results, equal-work timing
    x0 = x0_all[:cands_h]
    for backend in ("batched", "higher"):  # warm-up: first-call costs (vmap, cuBLAS, allocator)
        ascend(proxies, backend, dm, x0[:1], 1, chunk_h, device)
    runs = {}
    for backend in ("higher", "batched"):
        runs[backend] = ascend(proxies, backend, dm, x0, steps_h, chunk_h, device)
        print(f"  {backend:7s} {cands_h} candidates x {steps_h} steps: {runs[backend][0]:.2f} s wall, "
              f"{runs[backend][1]:.2f} s process CPU; {load_line()}", flush=True)
    (wh, ch, rh, sh), (wb, cb, rb, sb) = runs["higher"], runs["batched"]
    dx = float((rh.x - rb.x).abs().max())
    same_dis = sh["disagreement"] == sb["disagreement"]
    drift = max(abs(a - b) for a, b in zip(sh["soft_label_drift"], sb["soft_label_drift"], strict=True))
    print(f"  same semantics: max |x_higher - x_batched| = {dx:.1e}; per-step disagreement "
          f"{'identical' if same_dis else 'DIFFERENT'} (mean {sum(sb['disagreement']) / steps_h:.1f} pairs per copy); "
          f"max soft-label drift difference {drift:.1e}")
    if dx > 1e-3 or not same_dis:
        print("  WARNING: the backends disagree beyond float32 rounding")
    print()

    # ---- the batched backend at (up to) the full candidate count, each outer precision
    precisions = args.precisions or (["float32", "tf32", "bfloat16"] if cuda else ["float32"])
    if "float32" not in precisions:
        precisions = ["float32", *precisions]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    full_runs = {}
    for precision in precisions:
        if (cands_b, steps_b, precision) == (cands_h, steps_h, "float32"):
            full_runs[precision] = (wb, cb, rb.x)
            continue
        if precision != "float32":  # first-call costs of the new arithmetic (cuBLAS handles, kernels)
            ascend(proxies, "batched", dm, x0_all[:1], 1, chunk_b, device, precision)
        w, c, res, _ = ascend(proxies, "batched", dm, x0_all[:cands_b], steps_b, chunk_b, device, precision)
        full_runs[precision] = (w, c, res.x)
        print(f"  batched {cands_b} candidates x {steps_b} steps, outer {precision}: {w:.2f} s wall, "
              f"{c:.2f} s process CPU; {load_line()}", flush=True)
    full_b = full_runs["float32"][:2]
    print(f"  memory: {peak_memory(device)}")
    print()

    # ---- table
    full = FULL_CANDIDATES * FULL_STEPS
    per_h = wh / (cands_h * steps_h)
    per_b_eq = wb / (cands_h * steps_h)
    per_b = full_b[0] / (cands_b * steps_b)
    rows = [
        ["higher", str(cands_h), str(steps_h), f"{wh:.2f}", f"{ch:.2f}", f"{1e3 * per_h:.1f}",
         fmt_s(per_h * full), "extrapolated" if cands_h * steps_h < full else "measured"],
        ["batched", str(cands_h), str(steps_h), f"{wb:.2f}", f"{cb:.2f}", f"{1e3 * per_b_eq:.1f}",
         fmt_s(per_b_eq * full), "extrapolated" if cands_h * steps_h < full else "measured"],
    ]
    for precision, (w, c, _) in full_runs.items():
        if (cands_b, steps_b, precision) == (cands_h, steps_h, "float32"):
            continue
        per = w / (cands_b * steps_b)
        rows.append([f"batched {precision}", str(cands_b), str(steps_b), f"{w:.2f}", f"{c:.2f}",
                     f"{1e3 * per:.1f}", fmt_s(per * full),
                     "measured" if (cands_b, steps_b) == (FULL_CANDIDATES, FULL_STEPS) else "extrapolated"])
    print(f"ascent, width {'x'.join(map(str, hidden))}, N = {n} rows:")
    print(table(rows, ["backend", "candidates", "steps", "wall s", "CPU s", "ms / candidate-step",
                       f"{FULL_CANDIDATES}x{FULL_STEPS} ascent s", "how"]))
    print()
    print(f"ratio higher / batched, equal work ({cands_h} candidates x {steps_h} steps, both measured): "
          f"{wh / wb:.2f}x wall, {ch / cb:.2f}x process CPU")
    cpu_ratio = (ch / (cands_h * steps_h)) / (full_b[1] / (cands_b * steps_b))
    print(f"ratio higher / batched, full {FULL_CANDIDATES} x {FULL_STEPS} ascent: {per_h / per_b:.2f}x wall, "
          f"{cpu_ratio:.2f}x process CPU (higher extrapolated from {cands_h * steps_h} candidate-steps, batched "
          f"{'measured' if (cands_b, steps_b) == (FULL_CANDIDATES, FULL_STEPS) else 'extrapolated'} from "
          f"{cands_b} candidates x {steps_b} steps)")
    if len(full_runs) > 1:
        x32 = full_runs["float32"][2]
        print(f"outer precision, batched {cands_b} candidates x {steps_b} steps (same proxies, designs, noise):")
        for precision, (w, _, x) in full_runs.items():
            if precision != "float32":
                print(f"  {precision:8s}: {full_runs['float32'][0] / w:.2f}x faster than float32; "
                      f"max |x - x_float32| = {float((x - x32).abs().max()):.1e}")
    for precision, (w, _, _) in full_runs.items():
        achieved = flop_batched * 3 * cands_b * steps_b / w
        print(f"batched throughput, outer {precision}: {achieved / 1e12:.2f} TFLOP/s of outer-MSE work "
              f"(4 N P per copy-step, counting every copy as mentored)")
    if cuda and hidden == (2048, 2048):
        print("reference: the released code, one H100, 76 ms per candidate-step, "
              "7.6 s per candidate, ~16 min for 128 candidates")
    if not math.isfinite(per_h / per_b):
        raise SystemExit("timing failed")


if __name__ == "__main__":
    main()
