"""The table a grid makes, and the ``results`` command that makes it again from runs.

:func:`write_table` writes ``table.md``, ``table.csv``, ``table.png`` and ``runs.csv`` (every run's
row) into a grid's folder: mean and std of the normalised 100th/80th/50th percentiles per task and
method, how far the search moved, the published numbers alongside, IGNITE's λ and ρ‖∇h‖ at the end
of training, wall time per run, and the with/without-IGNITE comparison
(:mod:`lightning_mbo.comparison`). ``python -m lightning_mbo results FOLDER ...`` (:func:`collect`)
makes the same from the ``results.json`` files below folders, or from a grid's committed
``runs.csv`` without re-running.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import CLI

from lightning_mbo.comparison import format_comparison, write_comparison
from lightning_mbo.results import (
    BARELY_MOVED_BELOW,
    MOVEMENT_KEYS,
    UNMOVED_BELOW,
    atomic_write,
    is_movement_flag,
    load_rows,
    movement_flag,
    row_flags,
)
from lightning_mbo.validation import SettingsError

#: Published 100th-percentile numbers by (task, method): re-runs of the released code over 8 seeds,
#: the IGNITE paper's text (Dao et al., NeurIPS 2024) and the Tri-mentoring paper (Chen et al., NeurIPS 2023).
PUBLISHED: dict[tuple[str, str], str] = {
    ("TFBind8-Exact-v0", "grad_ascent"): "0.969 ± 0.021 (re-run, 8 seeds)",
    ("TFBind8-Exact-v0", "ens_mean"): "0.985 ± 0.008 (re-run, 8 seeds)",
    ("TFBind8-Exact-v0", "ens_mean+ignite"): "0.987 (IGNITE paper)",
    ("TFBind8-Exact-v0", "tri_mentoring"): "0.970 ± 0.001 (paper) / 0.956 ± 0.000 (re-run)",
    ("TFBind10-Exact-v0", "ens_min"): "0.681 (IGNITE paper)",
    ("TFBind10-Exact-v0", "ens_min+ignite"): "0.705 (IGNITE paper)",
    ("TFBind10-Exact-v0", "tri_mentoring"): "0.722 ± 0.017 (paper) / 0.662 ± 0.012 (re-run)",
}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (population, ddof 0) std per (task, run) of the percentiles and wall time, and
    where IGNITE ran, the range of λ and ρ‖∇h‖ at the end of training over all members of all runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["run"]), []).append(row)
    table = []
    for (task, run), group in groups.items():
        entry: dict[str, Any] = {"task": task, "run": run, "method": group[0]["method"],
                                 "seeds": len({r["seed"] for r in group}), "n": len(group)}
        for key in ("score_100th", "score_80th", "score_50th", "wall_seconds"):
            values = np.array([r[key] for r in group], dtype=np.float64)
            entry[f"{key}_mean"], entry[f"{key}_std"] = float(values.mean()), float(values.std())
        for key in ("lambda", "rho_grad_norm"):
            values = [v for r in group if "ignite" in r for v in r["ignite"][key]]
            entry[f"ignite_{key}_min"] = float(min(values)) if values else None
            entry[f"ignite_{key}_max"] = float(max(values)) if values else None
        for key in MOVEMENT_KEYS:
            values = [r[key] for r in group if r.get(key) is not None]
            entry[f"{key}_mean"] = float(np.mean(values)) if values else None
        entry["flags"] = "; ".join(dict.fromkeys(_cell_flags(entry, group)))
        starts = [r["start_score_100th"] for r in group if "start_score_100th" in r]
        entry["start_score_100th"] = float(np.mean(starts)) if starts else None
        entry["best_visible"] = group[0]["best_visible"]
        entry["published_100th"] = PUBLISHED.get((task, group[0]["method"]), "")
        table.append(entry)
    return table


def _cell_flags(entry: dict[str, Any], group: list[dict[str, Any]]) -> list[str]:
    """A cell's flags: the movement flag of its mean share of moved candidates, then the searcher's
    flags, each kind once (the first run's wording, numbers and all) with the number of runs that
    raised a flag of that kind (flags that differ only in their numbers are one kind)."""
    moved = movement_flag(entry.get("moved_fraction_mean"))
    kinds: dict[str, list[str]] = {}
    for row in group:
        for flag in dict.fromkeys(f for f in row_flags(row) if not is_movement_flag(f)):
            kinds.setdefault(re.sub(r"[\d.,]+", "#", flag), []).append(flag)
    flags = [moved] if moved else []
    return flags + [f"{same[0]} ({len(same)} of {len(group)} runs)" if len(group) > 1 else same[0]
                    for same in kinds.values()]


def _movement(entry: dict[str, Any]) -> str:
    """A cell's movement figures: ``95% / 1.78 / 16%`` (moved, mean distance to the nearest start, in data)."""
    if entry.get("moved_fraction_mean") is None:
        return "-"
    dist = entry.get("hamming_mean_mean")
    dist = entry.get("l2_mean_mean") if dist is None else dist
    return (f"{100 * entry['moved_fraction_mean']:.0f}% / {'-' if dist is None else f'{dist:.2f}'} "
            f"/ {100 * entry['in_data_fraction_mean']:.0f}%")


def _range(entry: dict[str, Any], key: str) -> str:
    lo, hi = entry[f"ignite_{key}_min"], entry[f"ignite_{key}_max"]
    return "-" if lo is None else f"{lo:.3f}–{hi:.3f}"


def _provenance() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'})"
    return f"machine: {device}, {torch.get_num_threads()} threads; torch {torch.__version__}; commit {commit}"


def format_table(table: list[dict[str, Any]], label: str = "", machine: str | None = None) -> str:
    """The Markdown table of :func:`summarize`'s entries, with the machine and commit (``machine``:
    the line of the machine the runs ran on; default this one's)."""
    md = ["# Normalised scores (mean ± std over runs)", ""]
    if label:
        md += [label, ""]
    md += [machine or _provenance(), ""]
    md += ["| task | run | method | seeds | runs | 100th | 80th | 50th | starting designs 100th | published 100th "
           "| D(best) | moved / distance / in data | λ end | ρ‖∇h‖ end | wall s / run | flags |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in table:
        start = "-" if e["start_score_100th"] is None else f"{e['start_score_100th']:.3f}"
        md.append(
            f"| {e['task']} | {e['run']} | {e['method']} | {e['seeds']} | {e['n']} "
            f"| {e['score_100th_mean']:.3f} ± {e['score_100th_std']:.3f} "
            f"| {e['score_80th_mean']:.3f} ± {e['score_80th_std']:.3f} "
            f"| {e['score_50th_mean']:.3f} ± {e['score_50th_std']:.3f} | {start} "
            f"| {e['published_100th'] or '-'} | {e['best_visible']:.3f} | {_movement(e)} "
            f"| {_range(e, 'lambda')} | {_range(e, 'rho_grad_norm')} | {e['wall_seconds_mean']:.1f} "
            f"| {e.get('flags') or '-'} |"
        )
    md += ["", MOVEMENT_NOTE]
    return "\n".join(md) + "\n"


#: Under every table: how to read the movement column.
MOVEMENT_NOTE = ("moved / distance / in data: share of final designs that are none of the starting designs, their "
                 "mean distance to the nearest start (Hamming positions for discrete tasks, normalised L2 for "
                 "continuous ones) and the share already in the visible dataset, means over runs; a cell whose "
                 f"candidates moved less than {100 * UNMOVED_BELOW:.0f}% is flagged \"did not move\", less than "
                 f"{100 * BARELY_MOVED_BELOW:.0f}% \"barely moved\": its percentiles are mostly the starting designs' "
                 "own, not the search's.")

#: Per-run fields kept in ``runs.csv``, from which a table is made again without re-running.
RUN_FIELDS = ("task", "run", "method", "seed", "replicate", "score_100th", "score_80th", "score_50th",
              "start_score_100th", "start_score_80th", "start_score_50th", "best_visible", *MOVEMENT_KEYS,
              "mean_predicted_start", "mean_predicted_final", "flags", "ignite_lambda", "ignite_rho_grad_norm",
              "fit_seconds", "ascent_seconds", "wall_seconds", "commit")


def run_record(row: dict[str, Any]) -> dict[str, Any]:
    """One row of ``runs.csv``: the row's scalar fields, its flags joined by ``; ``, IGNITE's end λ and
    ρ‖∇h‖ over members joined by spaces."""
    out = {k: row.get(k) for k in RUN_FIELDS}
    out["flags"] = "; ".join(row_flags(row))
    for key in ("lambda", "rho_grad_norm"):
        values = (row.get("ignite") or {}).get(key)
        out[f"ignite_{key}"] = " ".join(repr(float(v)) for v in values) if values else None
    return out


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``runs.csv`` (:func:`run_record`), numbers parsed, as :func:`summarize` takes them."""
    rows = []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, text in rec.items():
                if text in ("", None):
                    continue
                if key in ("task", "run", "method", "commit"):
                    row[key] = text
                elif key == "flags":
                    row["search_diagnostics"] = {"flags": [f for f in text.split("; ") if not is_movement_flag(f)]}
                elif key.startswith("ignite_"):
                    row.setdefault("ignite", {})[key.removeprefix("ignite_")] = [float(v) for v in text.split()]
                elif key in ("seed", "replicate"):
                    row[key] = int(text)
                else:
                    row[key] = float(text)
            rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], out: Path, label: str = "", machine: str | None = None) -> None:
    """Write ``table.md``, ``table.csv``, ``table.png`` and ``runs.csv`` (every run's row, from which
    the table can be made again: ``python -m lightning_mbo results <out>``) into ``out`` (atomically),
    with the comparison (``comparison.csv``, ``comparison.png``) and both figures as TensorBoard images
    (``<out>/tensorboard``)."""
    table = summarize(rows)
    machine = machine or _provenance()
    text = format_table(table, label, machine)
    comparison = write_comparison(table, rows, out)
    if comparison:
        text += "\n" + comparison
    atomic_write(out / "table.md", lambda f: f.write(text.encode()))
    buf = io.StringIO()
    if table:
        writer = csv.DictWriter(buf, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    atomic_write(out / "table.csv", lambda f: f.write(buf.getvalue().encode()))
    runs = io.StringIO()
    writer = csv.DictWriter(runs, fieldnames=list(RUN_FIELDS))
    writer.writeheader()
    writer.writerows(run_record(r) for r in rows)
    atomic_write(out / "runs.csv", lambda f: f.write(runs.getvalue().encode()))
    atomic_write(out / "machine.txt", lambda f: f.write(machine.encode()))
    if label:
        atomic_write(out / "label.txt", lambda f: f.write(label.encode()))
    _plot(table, out / "table.png")
    _tensorboard_images(out)


def _tensorboard_images(out: Path) -> None:
    """``table.png`` and ``comparison.png`` as TensorBoard images (``grid/table``, ``grid/comparison``)
    in ``<out>/tensorboard`` (``tensorboard --logdir <out>``): the event file of an earlier table of
    this folder is replaced, so the folder holds one image of each."""
    import matplotlib.image  # noqa: PLC0415
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

    logdir = out / "tensorboard"
    old = list(logdir.glob("events.out.tfevents.*"))
    writer = SummaryWriter(str(logdir))
    try:
        for name in ("table", "comparison"):
            png = out / f"{name}.png"
            if png.is_file():
                writer.add_image(f"grid/{name}", matplotlib.image.imread(png)[..., :3], 0, dataformats="HWC")
    finally:
        writer.close()
    for path in old:
        path.unlink(missing_ok=True)


def _plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(1, len(table)), 3.6))
    names = [f"{e['run']}\n{e['task'].split('-')[0]}" for e in table]
    ax.bar(range(len(table)), [e["score_100th_mean"] for e in table],
           yerr=[e["score_100th_std"] for e in table], capsize=3)
    for i, e in enumerate(table):
        ax.hlines(e["best_visible"], i - 0.4, i + 0.4, colors="grey", linestyles="dotted")
    ax.set_xticks(range(len(table)), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("normalised 100th percentile")
    ax.set_title("mean ± std over runs (dotted: D(best))", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def collect(folders: list[str], output_dir: str | None = None, label: str = "") -> list[dict[str, Any]]:
    """The runs of one or more folders, as one table: mean ± std by task and method, and the
    with/without-IGNITE comparison over every task they hold.

    Each folder is read for the ``results.json`` files below it; a folder without any (a grid's
    committed output) is read from its ``runs.csv``, so a table is made again without re-running.

    Args:
        folders: where to look (recursively), e.g. ``logs``, or grids' output folders.
        output_dir: also write ``table.md``, ``table.csv``, ``table.png`` and ``runs.csv`` there.
        label: a line under the table's title (default: where the runs came from).

    Returns:
        The rows found.
    """
    rows: list[dict[str, Any]] = []
    sources, machines = [], []
    for folder in folders:
        found, source, machine = _read_folder(Path(folder))
        rows += found
        sources.append(source)
        machines += [machine] if machine else []
    source = "\n\n".join(sources)
    machine = "\n\n".join(dict.fromkeys(machines)) or None
    if output_dir:
        write_table(rows, Path(output_dir), label or source, machine)
    table = summarize(rows)
    print(format_table(table, label or source, machine) + format_comparison(table, rows))
    return rows


def _read_folder(root: Path) -> tuple[list[dict[str, Any]], str, str | None]:
    """One folder's rows, a line saying where they came from, and the machine line they were run on."""
    files = sorted(root.rglob("results.json"))
    if files:
        rows = [{**row, "run": _run_name(f.relative_to(root), row)} for f in files for row in load_rows(f)]
        commits = ", ".join(sorted({str(r["commit"])[:7] for r in rows if r.get("commit")})) or "unknown"
        return rows, f"{len(files)} results.json files below {root}", f"{_provenance()}; the runs' commit {commits}"
    if (root / "runs.csv").is_file():
        rows = read_runs(root / "runs.csv")
        saved = root / "label.txt"
        source = saved.read_text() if saved.is_file() else f"{len(rows)} runs of {root / 'runs.csv'}"
        machine = (root / "machine.txt").read_text().strip() if (root / "machine.txt").is_file() else None
        return rows, source, machine
    raise SettingsError(f"no results.json below {root} and no runs.csv in it: point it at a folder of runs, "
                        "e.g. logs, or at a grid's output folder")


def _run_name(relative: Path, row: dict[str, Any]) -> str:
    """A run's name in a table: the grid's name for it (``<run>/seed_<s>/results.json``), else its method."""
    parts = relative.parts
    return parts[0] if len(parts) == 3 and parts[1].startswith("seed_") else row["method"]


def collect_main(args: list[str] | None = None) -> int:
    """``python -m lightning_mbo results FOLDER [FOLDER ...] [--output_dir DIR] [--label TEXT]``."""
    args = list(sys.argv[1:] if args is None else args)
    folders = []
    while args and not args[0].startswith("-"):
        folders.append(args.pop(0))
    if folders:
        args = [json.dumps(folders), *args]
    CLI(collect, args=args)
    return 0
