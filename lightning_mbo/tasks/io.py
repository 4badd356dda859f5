"""Finding and reading design-bench's on-disk data layout.

design-bench stores a dataset as shards ``<data_dir>/<folder>/<prefix>-x-<i>.npy`` and
``<prefix>-y-<i>.npy``, i = 0, 1, ..., concatenated in order.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np

from lightning_mbo.tasks.registry import TaskSpec

#: Environment variable naming a design-bench data directory.
DATA_DIR_ENV = "LIGHTNING_MBO_DATA_DIR"
#: Where design-bench's data can be downloaded today (its own URLs are dead).
HF_MIRROR = "https://huggingface.co/datasets/beckhamc/design_bench_data"
_PACKAGED = Path(__file__).parent / "data"


class MissingDataError(FileNotFoundError):
    """A task's shards are not where any of the searched places say."""


class BadDataError(ValueError):
    """Shards that exist but cannot be used (shapes, NaN, inf)."""


def design_bench_data_dir() -> Path | None:
    """The data folder of an installed ``design_bench`` package, found without importing it."""
    try:
        found = importlib.util.find_spec("design_bench")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    # design-bench keeps its data in a `design_bench_data` folder beside the package.
    return Path(next(iter(found.submodule_search_locations))).parent / "design_bench_data"


def candidate_dirs(data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """The data directories searched, in order, each with where it came from."""
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("data_dir argument", Path(data_dir).expanduser()))
    if os.environ.get(DATA_DIR_ENV):
        dirs.append((f"${DATA_DIR_ENV}", Path(os.environ[DATA_DIR_ENV]).expanduser()))
    pkg = design_bench_data_dir()
    if pkg is not None:
        dirs.append(("installed design_bench package", pkg))
    return dirs


def _shard_index(path: Path, prefix: str, kind: str) -> int:
    match = re.fullmatch(rf"{re.escape(prefix)}-{kind}-(\d+)\.npy", path.name)
    return int(match.group(1)) if match else -1


def find_shards(folder: Path, prefix: str) -> tuple[list[Path], list[Path]]:
    """The x and y shards in ``folder``, sorted by shard index; empty lists if none."""
    if not folder.is_dir():
        return [], []
    xs = sorted((p for p in folder.glob(f"{prefix}-x-*.npy") if _shard_index(p, prefix, "x") >= 0),
                key=lambda p: _shard_index(p, prefix, "x"))
    ys = sorted((p for p in folder.glob(f"{prefix}-y-*.npy") if _shard_index(p, prefix, "y") >= 0),
                key=lambda p: _shard_index(p, prefix, "y"))
    return xs, ys


def read_shards(x_paths: list[Path], y_paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate shards in order into preallocated arrays.

    Each shard is memory-mapped and copied once, so peak memory is the output plus the
    page cache of one shard (TFBind10's 84 shards, 8.3 M rows, read in seconds).

    Returns:
        ``x`` of shape ``(N, ...)`` in the shards' dtype and ``y`` of shape ``(N,)`` float32.
    """
    xi = [_shard_index(p, p.name.rsplit("-x-", 1)[0], "x") for p in x_paths]
    yi = [_shard_index(p, p.name.rsplit("-y-", 1)[0], "y") for p in y_paths]
    if xi != yi:
        raise BadDataError(f"x and y shards do not pair up: x shards {xi}, y shards {yi} in {x_paths[0].parent}")
    if xi != list(range(len(xi))):
        # A gap (an interrupted download) would silently drop rows from the data and the oracle.
        missing = sorted(set(range(max(xi) + 1)) - set(xi))
        raise BadDataError(f"shards {missing} are missing in {x_paths[0].parent}: shards must be numbered 0, 1, ...")
    xm = [np.load(p, mmap_mode="r") for p in x_paths]
    ym = [np.load(p, mmap_mode="r") for p in y_paths]
    for px, py, a, b in zip(x_paths, y_paths, xm, ym, strict=True):
        if a.shape[0] != b.shape[0] or b.size != b.shape[0]:
            raise BadDataError(f"{px.name} has {a.shape[0]} rows but {py.name} has shape {b.shape}; "
                               "y shards must be (rows, 1) with the rows of their x shard")
        if a.shape[1:] != xm[0].shape[1:] or a.dtype != xm[0].dtype:
            raise BadDataError(f"{px.name} has shape {a.shape} / {a.dtype}, unlike {x_paths[0].name} "
                               f"({xm[0].shape} / {xm[0].dtype})")
    n = sum(a.shape[0] for a in xm)
    x = np.empty((n, *xm[0].shape[1:]), dtype=xm[0].dtype)
    y = np.empty((n,), dtype=np.float32)
    start = 0
    for a, b in zip(xm, ym, strict=True):
        x[start:start + a.shape[0]] = a
        y[start:start + a.shape[0]] = np.asarray(b).reshape(-1)
        start += a.shape[0]
    return x, y


def check_finite(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Raise :class:`BadDataError` naming the rows that hold NaN or inf."""
    bad_y = ~np.isfinite(y)
    bad_x = ~np.isfinite(x.reshape(len(x), -1)).all(1) if np.issubdtype(x.dtype, np.floating) else None
    for label, bad in (("y", bad_y), ("x", bad_x)):
        if bad is not None and bad.any():
            rows = np.flatnonzero(bad)
            raise BadDataError(f"{where}: {len(rows)} rows of {label} hold NaN or inf (first rows: "
                               f"{rows[:5].tolist()}); clean the shards or drop those rows")


def load_task_data(spec: TaskSpec, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a task's full dataset (visible and hidden rows).

    Search order: ``data_dir``, ``$LIGHTNING_MBO_DATA_DIR``, the installed ``design_bench``
    package's data folder, then the data shipped inside lightning_mbo (TFBind8 only).

    Raises:
        MissingDataError: naming every file pattern and folder looked at and where to get them.
    """
    looked = []
    for origin, root in candidate_dirs(data_dir):
        folder = root / spec.folder
        xs, ys = find_shards(folder, spec.prefix)
        looked.append(f"  {folder}/{spec.prefix}-{{x,y}}-<i>.npy  ({origin})")
        if xs or ys:
            if not xs or not ys:
                raise BadDataError(f"{folder} has {len(xs)} x shards but {len(ys)} y shards")
            x, y = read_shards(xs, ys)
            check_finite(x, y, str(folder))
            return x, y
    packaged = _PACKAGED / f"{spec.prefix}.npz"
    if packaged.exists():
        with np.load(packaged) as z:
            x = z["x"].astype(np.int32) if spec.discrete else z["x"]
            return x, z["y"].astype(np.float32).reshape(-1)
    raise MissingDataError(
        f"no data for task {spec.name}. Looked for:\n" + ("\n".join(looked) or "  (no data directory given)")
        + f"\nDownload the folder {spec.folder}/ from design-bench's data mirror ({HF_MIRROR}) and pass "
        f"its parent directory as --data.data_dir or set ${DATA_DIR_ENV}."
    )
