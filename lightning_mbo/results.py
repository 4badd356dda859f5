"""Results on disk: atomic writes, the one shape of ``results.json``, and provenance.

``results.json`` is always ``{"rows": [...], "provenance": {...}}``: one row per replicate (a
plain run has one), each with its task, method, seed, replicate, normalised scores and timings,
and the run-level provenance: commit, package versions, config files, command line, data
source and checksum, the oracle (what scored: exact table, saved forest, ported MuJoCo, local
refit), checkpoint (for ``ascend``) and device. :func:`load_rows` reads it back.

No Lightning here: the search callback and the benchmark runner both use it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["BARELY_MOVED_BELOW", "MOVEMENT_KEYS", "UNMOVED_BELOW", "atomic_write", "commit", "is_movement_flag",
           "load_rows", "movement_flag", "movement_text", "provenance", "row_flags", "save_json", "save_npy",
           "versions"]

#: The movement figures a row carries (:mod:`lightning_mbo.functional.movement`): share of final
#: designs that are no starting design, mean distance to the nearest start (Hamming positions for
#: discrete tasks, normalised L2 for continuous ones), share already in the visible dataset.
MOVEMENT_KEYS = ("moved_fraction", "hamming_mean", "l2_mean", "in_data_fraction")

#: A search whose share of moved candidates is below this is flagged "did not move"...
UNMOVED_BELOW = 0.05
#: ... and below this "barely moved": its percentiles are mostly the starting designs' own.
BARELY_MOVED_BELOW = 0.25


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    The file gets the permissions an ordinary ``open`` would give it (``0666`` less the umask;
    a temporary file alone would be ``0600``, unreadable for the colleagues who can read the run).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def save_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def commit(where: Path | None = None) -> str | None:
    """The git commit of the tree holding the package (``+dirty`` if it has uncommitted changes);
    ``None`` outside a git tree."""
    where = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    out = {"python": platform.python_version()}
    for name in ("lightning_mbo", "torch", "pytorch-lightning", "numpy", "higher", "jsonargparse", "scikit-learn",
                 "mujoco"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """Run-level provenance: commit, versions, machine and command line, plus ``extra``."""
    return {
        "commit": commit(),
        "versions": versions(),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        **extra,
    }


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.json``, with the fields of its provenance each row needs to be
    read alone (``commit``)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "rows" not in data:
        raise ValueError(f"{path} is not a lightning_mbo results.json (no 'rows')")
    commit_id = (data.get("provenance") or {}).get("commit")
    return [{**row, "commit": commit_id} for row in data["rows"]]


def movement_text(row: dict[str, Any]) -> str:
    """The row's movement figures in words: ``moved 97% (Hamming 2.41), 3% in data``."""
    if "moved_fraction" not in row:
        return "movement not recorded"
    dist = (f"Hamming {row['hamming_mean']:.2f}" if "hamming_mean" in row
            else f"L2 {row.get('l2_mean', float('nan')):.3g}")
    return f"moved {100 * row['moved_fraction']:.0f}% ({dist}), {100 * row['in_data_fraction']:.0f}% in data"


def row_flags(row: dict[str, Any]) -> list[str]:
    """What a reader of the row must know: a search whose candidates (barely) moved (see
    :func:`movement_flag`), and the searcher's own flags."""
    moved = movement_flag(row.get("moved_fraction"))
    return ([moved] if moved else []) + list((row.get("search_diagnostics") or {}).get("flags", []))


def movement_flag(moved: float | None) -> str | None:
    """``did not move (3% moved)`` under :data:`UNMOVED_BELOW`, ``barely moved (16% moved)`` under
    :data:`BARELY_MOVED_BELOW`, else ``None``."""
    if moved is None or moved >= BARELY_MOVED_BELOW:
        return None
    return f"{'did not move' if moved < UNMOVED_BELOW else 'barely moved'} ({100 * moved:.0f}% moved)"


def is_movement_flag(flag: str) -> bool:
    """Whether ``flag`` is one :func:`movement_flag` wrote (a table recomputes it from its cell's mean)."""
    return flag.startswith(("did not move (", "barely moved ("))
