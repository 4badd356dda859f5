"""Helpers shared by the benchmark scripts in this folder (not part of the package)."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import torch

#: design-baselines' surrogate width (METHODS.md 2).
PUBLISHED_HIDDEN = (2048, 2048)


def quiet_lightning() -> None:
    """Silence Lightning's banners and the 'few dataloader workers' style warnings."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*treespec.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*IterableDataset.*has `__len__` defined.*")
    import pytorch_lightning  # noqa: F401  (its import sets its own loggers to INFO; override after)

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("PL_DISABLE_FORK", "1")


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
    try:
        load = "load average {:.1f} {:.1f} {:.1f} at start".format(*os.getloadavg())
    except OSError:
        load = ""
    return f"cpu {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; {load}"


def versions_line() -> str:
    import pytorch_lightning as pl

    return f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, python {platform.python_version()}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


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
