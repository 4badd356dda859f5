"""``python -m lightning_mbo tasks``: every registered design-bench task and whether its data is found.

Finding data only looks at folders and shard names (:func:`~lightning_mbo.tasks.io.locate_task_data`);
no shard is read, so listing is instant even with TFBind10's 8.3 M rows on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lightning_mbo.tasks import io
from lightning_mbo.tasks.registry import TASKS, TaskSpec

_COLUMNS = (("task", "name"), ("oracle", "oracle"), ("visible", "visible"), ("D(best)", "d_best"), ("data", "data"))


def _split(spec: TaskSpec) -> str:
    return f"{spec.min_percentile:g}-{spec.max_percentile:g}th pct"


def _target(spec: TaskSpec, data_dir: str | os.PathLike | None) -> str:
    """Where the task's shards should go: under ``data_dir``, else under ``$LIGHTNING_MBO_DATA_DIR``."""
    if data_dir is not None:
        folder = str(io.task_folder(Path(data_dir).expanduser(), spec))
    else:
        folder = f"{os.environ.get(io.DATA_DIR_ENV) or '$' + io.DATA_DIR_ENV}/{spec.folder}"
    return f"{folder}/{spec.prefix}-{{x,y}}-<i>.npy"


def task_row(spec: TaskSpec, data_dir: str | os.PathLike | None = None) -> dict:
    """One task's row of :func:`task_rows` (see there)."""
    row = {
        "name": spec.name, "oracle": spec.oracle, "min_percentile": spec.min_percentile,
        "max_percentile": spec.max_percentile, "visible": _split(spec), "best_visible": spec.best_visible,
        "d_best": f"{spec.best_visible:.3f}" if spec.best_visible is not None else "-",
        "found": False, "origin": None, "path": None, "shards": None, "expected_shards": spec.num_shards,
        "problem": None,
    }
    try:
        where = io.locate_task_data(spec, data_dir)
    except io.MissingDataError:
        shipped = " (or omit --data_dir: a copy is shipped)" if io.shipped_data(spec) else ""
        row["data"] = f"missing: put it at {_target(spec, data_dir)}{shipped}"
        return row
    except io.BadDataError as err:
        row["problem"] = str(err)
        row["data"] = f"unusable: {err}"
        return row
    row.update(found=True, origin=where.origin, path=str(where.path))
    if where.shipped:
        row["data"] = "shipped"
        return row
    row["shards"] = len(where.x_paths)
    row["data"] = f"{where.path} ({row['shards']} shards, {where.origin})"
    if spec.num_shards is not None and row["shards"] != spec.num_shards:
        row["problem"] = f"{row['shards']} of {spec.num_shards} shards"
        row["data"] = f"incomplete ({row['problem']}): {where.path}"
    elif spec.oracle_file and not _oracle_file_there(where.path, spec.oracle_file):
        row["problem"] = f"no oracle file {spec.folder}/{spec.oracle_file}"
        row["data"] = f"{row['data']}, but {row['problem']}"
    return row


def _oracle_file_there(folder: Path, oracle_file: str) -> bool:
    """The oracle's file (or, for a forest, a local refit of it: ``refit/<name>``) is in the task's folder."""
    return (folder / oracle_file).is_file() or (folder / "refit" / Path(oracle_file).name).is_file()


def task_rows(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every registered task but the synthetic ones, with where its data is found.

    Args:
        data_dir: the data directory a run would be given (``--data.data_dir``); ``None`` searches
            ``$LIGHTNING_MBO_DATA_DIR``, the installed design_bench package, then the shipped data.

    Returns:
        One dict per task, in registry order: ``name``, ``oracle`` (``exact`` or ``design_bench``),
        ``min_percentile`` / ``max_percentile`` and ``visible`` (the visible split as text),
        ``best_visible`` (D(best) or ``None``) and ``d_best`` (as text), ``found``, ``origin`` and
        ``path`` (the shard folder or shipped file), ``shards`` (shard pairs found) and
        ``expected_shards``, ``problem`` (``None`` or what is wrong with the data found) and ``data``
        (what the table shows: ``shipped``, the folder, or where to put the shards).
    """
    return [task_row(spec, data_dir) for spec in TASKS.values() if spec.oracle != "closed_form"]


def format_tasks(rows: list[dict]) -> str:
    """The rows of :func:`task_rows` as a plain-text table, with where to download missing data."""
    table = [[title for title, _ in _COLUMNS], *([str(row[key]) for _, key in _COLUMNS] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]).rstrip()
             for line in table]
    if any(not row["found"] or row["problem"] for row in rows):
        lines.append(f"Download missing task folders from {io.HF_MIRROR} (python -m lightning_mbo data download "
                     f"TASK --data_dir D) and pass their parent directory as --data.data_dir or set "
                     f"${io.DATA_DIR_ENV}.")
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> int:
    """``python -m lightning_mbo tasks [--data_dir D]``: print the table of :func:`format_tasks`.

    Args:
        args: the command-line arguments after ``tasks``, e.g. ``["--data_dir", "/data"]``.

    Returns:
        0, the exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m lightning_mbo tasks",
                                     description="List the design-bench tasks and where their data is.")
    parser.add_argument("--data_dir", default=None,
                        help=f"design-bench data directory (default: ${io.DATA_DIR_ENV}, an installed "
                             "design_bench package's data, the shipped TFBind8)")
    ns = parser.parse_args(args)
    print(format_tasks(task_rows(ns.data_dir)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
