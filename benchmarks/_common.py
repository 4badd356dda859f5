"""Helpers shared by the benchmark scripts in this folder (not part of the package)."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")

#: design-baselines' surrogate width (Trabucco et al., ICML 2022).
PUBLISHED_HIDDEN = (2048, 2048)


def quiet_lightning() -> None:
    """Silence Lightning's banners and the 'few dataloader workers' style warnings."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*treespec.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*IterableDataset.*has `__len__` defined.*")
    # Surrogate's val/loss is logged without batch_size (speed only here; the weighting does not matter).
    warnings.filterwarnings("ignore", ".*infer the `batch_size` from an ambiguous collection.*")
    import pytorch_lightning  # noqa: F401  (its import sets its own loggers to INFO; override after)

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("PL_DISABLE_FORK", "1")


def add_device_args(p: argparse.ArgumentParser, cpu_hidden: Sequence[int], what: str = "hidden widths") -> None:
    """The options every script shares: ``--device``, ``--hidden`` and ``--threads``."""
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument("--hidden", type=int, nargs="+", default=None,
                   help=f"{what}; default 2048 2048 (published) on cuda, {' '.join(map(str, cpu_hidden))} on cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads; default 1 on cpu (several threads stall whenever another process "
                        "shares the cores), torch's default on cuda")


def setup_device(args: argparse.Namespace, cpu_hidden: Sequence[int]) -> tuple[torch.device, tuple[int, ...], str]:
    """Device, torch threads and widths from :func:`add_device_args`' options.

    Returns:
        ``(device, hidden, width_line)``; on CPU the torch threads are set to ``--threads`` or 1.
    """
    device = resolve_device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    hidden, width_line = resolve_hidden(args.hidden, device, cpu_hidden)
    return device, hidden, width_line


def resolve_device(name: str | None) -> torch.device:
    """``cuda`` if asked for (error if absent), ``cpu`` if asked for, else the best available."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    return torch.device(name)


def resolve_hidden(hidden: Sequence[int] | None, device: torch.device, cpu_default: Sequence[int]) -> tuple[
        tuple[int, ...], str]:
    """The hidden widths to use and a line that says where they come from."""
    if hidden is not None:
        hidden = tuple(hidden)
        note = "published" if hidden == PUBLISHED_HIDDEN else "REDUCED (published: 2x2048)"
        return hidden, f"{_width(hidden)} ({note}, set by --hidden)"
    if device.type == "cuda":
        return PUBLISHED_HIDDEN, f"{_width(PUBLISHED_HIDDEN)} (published)"
    hidden = tuple(cpu_default)
    return hidden, (f"{_width(hidden)} (REDUCED for CPU; published: 2x2048, pass --hidden 2048 2048 to use it)")


def _width(hidden: Sequence[int]) -> str:
    if len(set(hidden)) == 1:
        return f"{len(hidden)}x{hidden[0]}"
    return "-".join(str(h) for h in hidden)


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return (f"cuda:{idx} {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
                f"float32 matmul precision {torch.get_float32_matmul_precision()!r}")
    cpu = platform.processor() or platform.machine()
    return f"cpu {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; {load_line()} at start"


def load_line() -> str:
    """The machine's load average now (1, 5 and 15 minutes)."""
    try:
        return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        return "load average n/a"


def versions_line() -> str:
    import pytorch_lightning as pl

    return f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, python {platform.python_version()}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, float, T]:
    """Wall seconds, process-CPU seconds and result of ``fn()``, the device synchronised before and after.

    CPU time is ``time.process_time`` of this process: it barely depends on other processes sharing
    the cores (with more than one torch thread it also counts the threads' spin-waiting).
    """
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def member_batches(dm, members: int, batch: int, count: int, device: torch.device,
                   seed: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """``count`` training batches ``(x (M, b, D), y (M, b), rows)`` drawn with replacement from the
    datamodule's visible data ``dm.x``/``dm.y``, already on ``device``; ``rows = b``, the global
    batch size, as :class:`lightning_mbo.data.datamodule.MemberBatches` yields it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        idx = torch.randint(0, len(dm.y), (members, batch), generator=g)
        out.append((dm.x[idx].to(device), dm.y[idx].to(device), batch))
    return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain fixed-width table (also valid Markdown)."""
    cols = list(zip(header, *rows, strict=True))
    widths = [max(len(c) for c in col) for col in cols]
    fmt = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)
