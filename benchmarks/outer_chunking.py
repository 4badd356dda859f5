"""How many training rows per chunk should Tri-mentoring's outer pass take?

Times :func:`lightning_mbo.functional.outer_dot.outer_dot` (the batched backend's pass over the
whole training set, once per mentoring step) on TFBind8's N = 32,898 visible rows for
``--copies`` stacked proxy copies (128 candidates x 3 proxies = 384 in a real run), at several
chunk sizes: the package's own choice (``auto_chunk``) and the ``--chunks`` given. The chunk
sizes run interleaved in ``--rounds`` rounds on the same weights, points and data; the script
prints the median time per pass, the size of one ``(copies, rows, width)`` activation and each
size's time relative to the package's choice, and checks that every size gives the same
result (to float32 rounding).

    python benchmarks/outer_chunking.py                          # CPU, proxies 2x64
    python benchmarks/outer_chunking.py --device cuda --copies 96  # GPU, 2x2048
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_device_args, device_line, load_line, median, setup_device, table, timed, versions_line  # noqa: E402

from lightning_mbo.data.datamodule import MBODataModule  # noqa: E402
from lightning_mbo.functional.outer_dot import OuterMSE, auto_chunk, outer_dot  # noqa: E402

CPU_HIDDEN = (64, 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_args(p, CPU_HIDDEN)
    p.add_argument("--copies", type=int, default=384, help="stacked proxy copies (candidates x proxies)")
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 256, 512, 2048],
                   help="rows per chunk to time besides the package's choice")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--neighbours", type=int, default=10)
    p.add_argument("--task", default="TFBind8-Exact-v0")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, hidden, width_line = setup_device(args, CPU_HIDDEN)
    dm = MBODataModule(args.task, seed=args.seed)
    x, y = dm.x.to(device), dm.y.to(device)
    m, k, d = args.copies, args.neighbours, x.shape[1]
    g = torch.Generator().manual_seed(args.seed)
    dims = [d, *hidden, 1]
    params = {}
    for i in range(len(dims) - 1):
        params[f"layers.{i}.weight"] = (torch.randn(m, dims[i], dims[i + 1], generator=g) / dims[i] ** 0.5).to(device)
        params[f"layers.{i}.bias"] = (0.1 * torch.randn(m, 1, dims[i + 1], generator=g)).to(device)
    inner = {n: v + 1e-3 * torch.randn(v.shape, generator=g).to(device) for n, v in params.items()}
    x_nb = x[:1] + 0.1 * torch.randn(m, k, d, generator=g).to(device)  # (m, K, D) points near one design

    package = auto_chunk(inner, x)
    sizes = [package] + [c for c in args.chunks if c != package]
    print("== Tri-mentoring outer pass: rows per chunk ==")
    print(f"device:  {device_line(device)}")
    print(f"version: {versions_line()}")
    print(f"work:    outer_dot, {m} proxy copies of width {width_line}, K {k}, N {len(x)} rows, float32; "
          f"{args.rounds} interleaved rounds after one warm-up pass each; median")
    print(flush=True)

    results, times = {}, {c: [] for c in sizes}
    for c in sizes:  # warm-up, and the result to compare
        results[c] = outer_dot(inner, params, x_nb, OuterMSE(x, y, c), "relu")[0]
    for r in range(args.rounds):
        for c in (sizes if r % 2 == 0 else sizes[::-1]):
            wall, _, _ = timed(lambda c=c: outer_dot(inner, params, x_nb, OuterMSE(x, y, c), "relu"), device)
            times[c].append(wall)
    base = median(times[package])
    scale = float(results[package].abs().max())
    rows = []
    for c in sizes:
        block = m * min(c, len(x)) * max(hidden) * x.element_size() / 2**20
        diff = float((results[c] - results[package]).abs().max()) / max(scale, 1e-30)
        rows.append([f"{c}{' (package)' if c == package else ''}", f"{block:.1f}", f"{median(times[c]):.3f}",
                     f"{median(times[c]) / base:.2f}x", f"{diff:.1e}"])
    print(table(rows, ["rows per chunk", "MiB per activation", "s per pass", "vs package", "max rel. diff"]))
    if device.type == "cpu":
        print(f"  {load_line()} at the end")


if __name__ == "__main__":
    main()
