"""Shared fixtures: hermetic data search, synthetic design-bench shards in ``tmp_path``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from lightning_mbo.tasks import io

#: TFBind10's folder and shard prefix in design-bench's layout.
TFBIND10_FOLDER, TFBIND10_PREFIX = "tf_bind_10-pho4", "tf_bind_10"

ShardWriter = Callable[..., Path]


@pytest.fixture(autouse=True)
def hermetic_data_search(monkeypatch: pytest.MonkeyPatch):
    """No test sees a developer's ``$LIGHTNING_MBO_DATA_DIR`` or an installed design_bench's data,
    and Lightning's global seed variable does not leak from one test into the next."""
    monkeypatch.delenv(io.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(io, "design_bench_data_dir", lambda: None)
    seed = os.environ.get("PL_GLOBAL_SEED")
    yield
    if seed is None:
        os.environ.pop("PL_GLOBAL_SEED", None)
    else:
        os.environ["PL_GLOBAL_SEED"] = seed


def write_shards(
    root: Path,
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    folder: str = TFBIND10_FOLDER,
    prefix: str = TFBIND10_PREFIX,
    x_indices: Sequence[int] | None = None,
    y_indices: Sequence[int] | None = None,
) -> Path:
    """Write ``<root>/<folder>/<prefix>-{x,y}-<i>.npy`` as design-bench does; returns the folder.

    ``x_indices`` / ``y_indices`` name the shard numbers (default 0, 1, ...), so tests can leave
    gaps or write a different number of x and y shards.
    """
    out = Path(root) / folder
    out.mkdir(parents=True, exist_ok=True)
    for i, a in zip(x_indices if x_indices is not None else range(len(xs)), xs, strict=True):
        np.save(out / f"{prefix}-x-{i}.npy", a)
    for i, a in zip(y_indices if y_indices is not None else range(len(ys)), ys, strict=True):
        np.save(out / f"{prefix}-y-{i}.npy", a)
    return out


def distinct_designs(n: int, length: int = 10, num_classes: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` distinct int32 designs ``(n, length)`` with values in ``[0, num_classes)``."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(num_classes**length, size=n, replace=False)
    digits = (keys[:, None] // num_classes ** np.arange(length - 1, -1, -1)) % num_classes
    return digits.astype(np.int32)


@pytest.fixture
def tfbind10_of_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """TFBind10 as registered, less its expected shard and row counts (84 shards, 8,321,066 rows),
    for tests that stand in small synthetic shards for the real ones."""
    from dataclasses import replace  # noqa: PLC0415

    from lightning_mbo.tasks import TASKS  # noqa: PLC0415

    name = "TFBind10-Exact-v0"
    monkeypatch.setitem(TASKS, name, replace(TASKS[name], num_shards=None, num_rows=None))


def shipped_tfbind8(max_samples: int, dtype=None, **kwargs):
    """An ``MBODataModule`` over the shipped TFBind8 (no developer data directory), ``max_samples``
    rows at seed 0, with ``x`` and ``y`` cast to ``dtype`` when given."""
    from lightning_mbo.data import MBODataModule  # noqa: PLC0415

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(io.DATA_DIR_ENV, raising=False)
        mp.setattr(io, "design_bench_data_dir", lambda: None)
        dm = MBODataModule(max_samples=max_samples, seed=0, **kwargs)
    if dtype is not None:
        dm.x, dm.y = dm.x.to(dtype), dm.y.to(dtype)
    return dm


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the test: small MLPs gain nothing from more, and on a busy 2-core
    machine OpenMP's spinning threads make every step up to 100x slower."""
    import torch  # noqa: PLC0415

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tfbind10_every_design(tmp_path: Path, tfbind10_of_any_size: None) -> Path:
    """A data folder standing in for TFBind10: every 10-mer once, scored by its share of class 3
    plus a small periodic term, in design-bench's layout (the exact oracle scores only designs of
    its table, so methods that propose new sequences need all of them)."""
    data = tmp_path / "tfbind10_data"
    keys = np.arange(4**10)
    designs = ((keys[:, None] // 4 ** np.arange(9, -1, -1)) % 4).astype(np.int32)
    score = (designs == 3).mean(-1, dtype=np.float32)[:, None] + np.float32(0.01) * (keys % 7)[:, None]
    write_shards(data, [designs], [score.astype(np.float32)])
    return data


@pytest.fixture
def shard_writer() -> ShardWriter:
    """:func:`write_shards`, for tests that build their own shards."""
    return write_shards


@pytest.fixture
def tfbind10_shards(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """12 shards of 5 distinct TFBind10 designs each, y = shard + row / 10 (increasing in shard order).

    Twelve shards so that numeric order (..., 9, 10, 11) and string order (1, 10, 11, 2, ...) differ.
    Returns the data directory and the x and y shards in numeric order.
    """
    designs = distinct_designs(60, seed=1)
    xs = [designs[5 * i:5 * (i + 1)] for i in range(12)]
    ys = [(i + np.arange(5, dtype=np.float32) / 10)[:, None].astype(np.float32) for i in range(12)]
    write_shards(tmp_path, xs, ys)
    return tmp_path, xs, ys


@pytest.fixture
def make_designs() -> Callable[..., np.ndarray]:
    """:func:`distinct_designs`, for tests that build their own shards."""
    return distinct_designs


def read_result(run_dir: Path) -> dict:
    """A single run's ``results.json``: its one row, with the run's provenance under ``provenance``."""
    import json  # noqa: PLC0415

    data = json.loads((Path(run_dir) / "results.json").read_text())
    assert set(data) == {"rows", "provenance"} and len(data["rows"]) == 1, sorted(data)
    return {**data["rows"][0], "provenance": data["provenance"]}


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def quick_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[Path, dict]]:
    """``quick_fit(config, *args)``: ``python -m lightning_mbo fit --config configs/<config>`` (a list:
    one ``--config`` each, e.g. ``["tfbind8/coms.yaml", "ignite.yaml"]``) for one
    epoch on 1000 TFBind8 rows, in-process; returns the run folder and its results row."""
    import sys  # noqa: PLC0415

    from lightning_mbo.cli import main  # noqa: PLC0415

    monkeypatch.setattr(sys, "argv", ["lightning-mbo"])

    def fit(config: str | list[str], *args: str) -> tuple[Path, dict]:
        files = [config] if isinstance(config, str) else config
        stack = [a for c in files for a in ("--config", str(REPO / "configs" / c))]
        cli = main(["fit", *stack, "--trainer.max_epochs", "1",
                    "--data.max_samples", "1000", "--trainer.enable_progress_bar", "false",
                    "--trainer.logger.init_args.save_dir", str(tmp_path), *args])
        run = Path(cli.trainer.log_dir)
        return run, read_result(run)

    return fit
