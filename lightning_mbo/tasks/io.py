"""Finding and reading design-bench's on-disk data layout.

design-bench stores a dataset as shards ``<data_dir>/<folder>/<prefix>-x-<i>.npy`` and
``<prefix>-y-<i>.npy``, i = 0, 1, ..., concatenated in order. :func:`locate_task_data` says where a
task's data is without reading it; :func:`read_task_data` reads it and says where it came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
    """Shards that exist but cannot be used (corrupt files, missing shards, shapes, NaN, inf)."""


#: ``origin`` of each place data is found in, as :attr:`DataLocation.origin` and ``Task.source`` say.
ORIGIN_ARGUMENT = "data_dir argument"
ORIGIN_ENV = f"${DATA_DIR_ENV}"
ORIGIN_DESIGN_BENCH = "installed design_bench package"
ORIGIN_SHIPPED = "shipped with lightning_mbo"


def download_command(spec: TaskSpec, root: str | os.PathLike) -> str:
    """The command that downloads ``spec``'s files into the data directory ``root``
    (:mod:`lightning_mbo.tasks.commands.download`; nothing is ever downloaded without it)."""
    return f"python -m lightning_mbo data download {spec.name} --data_dir {root}"


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
        dirs.append((ORIGIN_ARGUMENT, Path(data_dir).expanduser()))
    if os.environ.get(DATA_DIR_ENV):
        dirs.append((ORIGIN_ENV, Path(os.environ[DATA_DIR_ENV]).expanduser()))
    pkg = design_bench_data_dir()
    if pkg is not None:
        dirs.append((ORIGIN_DESIGN_BENCH, pkg))
    return dirs


def task_folder(root: Path, spec: TaskSpec) -> Path:
    """The task's folder under the data directory ``root``, or ``root`` itself when it is that folder.

    ``root`` is taken as the task's folder (rather than its parent) when ``root/<folder>`` does not
    exist and ``root`` is named like the folder or directly holds the task's shards.
    """
    nested = root / spec.folder
    if nested.is_dir():
        return nested
    if root.name == spec.folder or any(find_shards(root, spec.prefix)):
        return root
    return nested


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


def _open_npy(path: Path) -> np.ndarray:
    """Memory-map one ``.npy`` shard; a file numpy cannot read is :class:`BadDataError`."""
    try:
        array = np.load(path, mmap_mode="r")
    # numpy raises ValueError for most bad headers, tokenize's error for some that do not tokenize.
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as err:
        raise BadDataError(f"{path} is corrupt or truncated ({type(err).__name__}: {err}); delete it and "
                           f"download it again from {HF_MIRROR}") from err
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise BadDataError(f"{path} is not a .npy array; delete it and download it again from {HF_MIRROR}")
    return array


def open_shards(x_paths: Sequence[Path], y_paths: Sequence[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check that shards pair up, are numbered 0, 1, ... and agree in shape; memory-map them.

    Nothing is read but the headers: ``sum(len(a) for a in xs)`` is the dataset's row count.

    Raises:
        BadDataError: unpaired or missing shards, a corrupt file, or shards whose shapes disagree.
    """
    xi = [_shard_index(p, p.name.rsplit("-x-", 1)[0], "x") for p in x_paths]
    yi = [_shard_index(p, p.name.rsplit("-y-", 1)[0], "y") for p in y_paths]
    if xi != yi:
        raise BadDataError(f"x and y shards do not pair up: x shards {xi}, y shards {yi} in {x_paths[0].parent}")
    if xi != list(range(len(xi))):
        # A gap (an interrupted download) would silently drop rows from the data and the oracle.
        missing = sorted(set(range(max(xi) + 1)) - set(xi))
        raise BadDataError(f"shards {missing} are missing in {x_paths[0].parent}: shards must be numbered 0, 1, ...")
    xm = [_open_npy(p) for p in x_paths]
    ym = [_open_npy(p) for p in y_paths]
    for px, py, a, b in zip(x_paths, y_paths, xm, ym, strict=True):
        if a.ndim == 0 or b.ndim == 0 or a.shape[0] != b.shape[0] or b.size != b.shape[0]:
            raise BadDataError(f"{px.name} has {a.shape[0] if a.ndim else 0} rows but {py.name} has shape "
                               f"{b.shape}; y shards must be (rows, 1) with the rows of their x shard")
        if a.shape[1:] != xm[0].shape[1:] or a.dtype != xm[0].dtype:
            raise BadDataError(f"{px.name} has shape {a.shape} / {a.dtype}, unlike {x_paths[0].name} "
                               f"({xm[0].shape} / {xm[0].dtype})")
    return xm, ym


def _concatenate(xm: list[np.ndarray], ym: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    n = sum(a.shape[0] for a in xm)
    x = np.empty((n, *xm[0].shape[1:]), dtype=xm[0].dtype)
    y = np.empty((n,), dtype=np.float32)
    start = 0
    for a, b in zip(xm, ym, strict=True):
        x[start:start + a.shape[0]] = a
        y[start:start + a.shape[0]] = np.asarray(b).reshape(-1)
        start += a.shape[0]
    return x, y


def read_shards(x_paths: Sequence[Path], y_paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate shards in order into preallocated arrays.

    Each shard is memory-mapped and copied once, so peak memory is the output plus the
    page cache of one shard (TFBind10's 84 shards, 8.3 M rows, read in seconds).

    Returns:
        ``x`` of shape ``(N, ...)`` in the shards' dtype and ``y`` of shape ``(N,)`` float32.

    Raises:
        BadDataError: see :func:`open_shards`.
    """
    return _concatenate(*open_shards(x_paths, y_paths))


def sha256_files(paths: Sequence[Path], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the files' bytes, one after the other, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def check_size(spec: TaskSpec, folder: Path, xm: Sequence[np.ndarray]) -> None:
    """Raise :class:`BadDataError` when the shards' count or rows differ from the spec's full dataset."""
    rows = sum(a.shape[0] for a in xm)
    if ((spec.num_shards is None or len(xm) == spec.num_shards)
            and (spec.num_rows is None or rows == spec.num_rows)):
        return
    expected = " ".join(filter(None, [
        f"{spec.num_shards} shards" if spec.num_shards is not None else None,
        f"({spec.num_rows:,} rows)" if spec.num_rows is not None else None,
    ]))
    short = (spec.num_shards is not None and len(xm) < spec.num_shards) or (
        spec.num_rows is not None and rows < spec.num_rows)
    fix = (f"the download is incomplete; fetch the missing shards from {HF_MIRROR} into {folder}" if short else
           f"these are not design-bench's shards; download {spec.folder}/ again from {HF_MIRROR}")
    raise BadDataError(f"{folder} holds shards 0..{len(xm) - 1} ({rows:,} rows) but {spec.name} has "
                       f"{expected}: {fix}")


def check_finite(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Raise :class:`BadDataError` naming the rows that hold NaN or inf."""
    bad_y = ~np.isfinite(y)
    bad_x = ~np.isfinite(x.reshape(len(x), -1)).all(1) if np.issubdtype(x.dtype, np.floating) else None
    for label, bad in (("y", bad_y), ("x", bad_x)):
        if bad is not None and bad.any():
            rows = np.flatnonzero(bad)
            raise BadDataError(f"{where}: {len(rows)} rows of {label} hold NaN or inf (first rows: "
                               f"{rows[:5].tolist()}); clean the shards or drop those rows")


def shipped_data(spec: TaskSpec) -> Path | None:
    """The ``.npz`` copy of the task shipped inside lightning_mbo (TFBind8), else ``None``."""
    path = _PACKAGED / f"{spec.prefix}.npz"
    return path if spec.prefix and path.is_file() else None


@dataclass(frozen=True)
class DataLocation:
    """Where a task's data is, found without reading it.

    Attributes:
        origin: which searched place holds it (``"data_dir argument"``, ``"$LIGHTNING_MBO_DATA_DIR"``,
            ``"installed design_bench package"`` or ``"shipped with lightning_mbo"``).
        path: the task's shard folder, or the shipped ``.npz`` file.
        x_paths: the x shards in shard order (empty for the shipped file).
        y_paths: the y shards in shard order (empty for the shipped file).
    """

    origin: str
    path: Path
    x_paths: tuple[Path, ...] = ()
    y_paths: tuple[Path, ...] = ()

    @property
    def shipped(self) -> bool:
        """The data is the copy shipped inside lightning_mbo."""
        return self.origin == ORIGIN_SHIPPED


class TaskData(NamedTuple):
    """A task's full dataset and where it came from (``Task.source``)."""

    x: np.ndarray
    y: np.ndarray
    source: dict[str, object]


def _pattern(folder: Path, spec: TaskSpec) -> str:
    return f"{folder}/{spec.prefix}-{{x,y}}-<i>.npy"


def _shards_at(origin: str, folder: Path, spec: TaskSpec) -> DataLocation | None:
    xs, ys = find_shards(folder, spec.prefix)
    if not xs and not ys:
        return None
    if not xs or not ys:
        raise BadDataError(f"{folder} has {len(xs)} x shards but {len(ys)} y shards; download the missing "
                           f"ones from {HF_MIRROR}")
    return DataLocation(origin, folder, tuple(xs), tuple(ys))


def locate_task_data(spec: TaskSpec, data_dir: str | os.PathLike | None = None) -> DataLocation:
    """Find a task's data without reading it.

    A ``data_dir`` given here must hold the task (as ``data_dir/<folder>/`` or as the task's folder
    itself); nothing else is searched then. Without one the search order is
    ``$LIGHTNING_MBO_DATA_DIR``, the installed ``design_bench`` package's data folder, then the data
    shipped inside lightning_mbo (TFBind8 only).

    Raises:
        MissingDataError: ``data_dir`` does not exist or lacks the task, or no searched place has it.
        BadDataError: a folder holds x shards but no y shards, or the reverse.
    """
    packaged = shipped_data(spec)
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        shipped = " (or leave data_dir unset to use the copy shipped with lightning_mbo)" if packaged else ""
        if not root.is_dir():
            raise MissingDataError(
                f"data_dir {root} does not exist or is not a directory; pass the directory that holds "
                f"{spec.folder}/ (downloaded from {HF_MIRROR}) as --data.data_dir{shipped}")
        folder = task_folder(root, spec)
        found = _shards_at(ORIGIN_ARGUMENT, folder, spec)
        if found is None:
            raise MissingDataError(
                f"no {spec.name} data in data_dir {root}: expected {_pattern(folder, spec)}; download it with "
                f"{download_command(spec, root)} (from {HF_MIRROR}), or pass the directory that holds it{shipped}")
        return found
    looked = []
    for origin, root in candidate_dirs(None):
        folder = task_folder(root, spec)
        looked.append(f"  {_pattern(folder, spec)}  ({origin})")
        found = _shards_at(origin, folder, spec)
        if found is not None:
            return found
    if packaged is not None:
        return DataLocation(ORIGIN_SHIPPED, packaged)
    raise MissingDataError(
        f"no data for task {spec.name}. Looked for:\n" + ("\n".join(looked) or "  (no data directory given)")
        + f"\nDownload the folder {spec.folder}/ from design-bench's data mirror ({HF_MIRROR}) with "
        f"{download_command(spec, '<data_dir>')} and pass <data_dir> as --data.data_dir or set ${DATA_DIR_ENV}."
    )


def read_task_data(spec: TaskSpec, data_dir: str | os.PathLike | None = None) -> TaskData:
    """Read a task's full dataset (visible and hidden rows) and say where it came from.

    The data is found by :func:`locate_task_data`. Shards are checked (pairs, numbering, shapes,
    the spec's ``num_shards`` and ``num_rows``, finite values) before they are used.

    Returns:
        ``x``, ``y`` (``(N,)`` float32) and ``source``: ``origin`` (see :class:`DataLocation`),
        ``path`` (the folder or the shipped ``.npz``), ``files`` (files read) and ``sha256`` (hex
        digest of those files' bytes, shard by shard, x before y).

    Raises:
        MissingDataError: see :func:`locate_task_data`.
        BadDataError: corrupt, incomplete or inconsistent shards, or NaN / inf values.
    """
    where = locate_task_data(spec, data_dir)
    if where.shipped:
        with np.load(where.path) as z:
            x = z["x"].astype(np.int32) if spec.discrete else z["x"]
            y = z["y"].astype(np.float32).reshape(-1)
        files = [where.path]
    else:
        xm, ym = open_shards(where.x_paths, where.y_paths)
        check_size(spec, where.path, xm)
        x, y = _concatenate(xm, ym)
        del xm, ym
        check_finite(x, y, str(where.path))
        files = [p for pair in zip(where.x_paths, where.y_paths, strict=True) for p in pair]
    source: dict[str, object] = {"origin": where.origin, "path": str(where.path), "files": len(files),
                                 "sha256": sha256_files(files)}
    return TaskData(x, y, source)


def load_task_data(spec: TaskSpec, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a task's full dataset (visible and hidden rows): :func:`read_task_data` without its source.

    Raises:
        MissingDataError: naming the files looked for and where to get them.
        BadDataError: corrupt, incomplete or inconsistent shards, or NaN / inf values.
    """
    data = read_task_data(spec, data_dir)
    return data.x, data.y
