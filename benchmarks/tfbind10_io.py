"""TFBind10-sized data through the task layer: shard reading, the exact oracle, scoring.

Writes 84 synthetic shards in design-bench's layout (``tf_bind_10-pho4/tf_bind_10-{x,y}-<i>.npy``,
8,321,066 rows of int32 10-mers in total, as the real dataset; scores are random) into a
temporary folder, then times ``Task("TFBind10-Exact-v0", data_dir=...)`` (read + visible split),
building the lookup oracle, and scoring 128 designs; it prints the peak resident memory.

    python benchmarks/tfbind10_io.py
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from lightning_mbo.tasks import Task

ROWS = 8_321_066
SHARDS = 84


def write_shards(root: Path, rows: int, shards: int, seed: int = 0) -> None:
    folder = root / "tf_bind_10-pho4"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, n in enumerate(np.diff(np.linspace(0, rows, shards + 1).astype(np.int64))):
        # Every 10-mer 5-8 times, like the real file: draw keys uniformly from the 4^10 designs.
        keys = rng.integers(0, 4**10, size=n)
        x = ((keys[:, None] // 4 ** np.arange(9, -1, -1)) % 4).astype(np.int32)
        np.save(folder / f"tf_bind_10-x-{i}.npy", x)
        np.save(folder / f"tf_bind_10-y-{i}.npy", rng.standard_normal((n, 1)).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--shards", type=int, default=SHARDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_shards(Path(tmp), args.rows, args.shards)
        print(f"wrote {args.shards} shards, {args.rows:,} rows in {time.perf_counter() - t:.1f} s")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        task = Task("TFBind10-Exact-v0", data_dir=tmp)
        read = time.perf_counter() - t
        t = time.perf_counter()
        oracle_size = len(task.oracle)
        build = time.perf_counter() - t
        designs, _ = task.top_k(128)
        t = time.perf_counter()
        task.score(designs)
        score = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data_mb = (task.x_all.nbytes + task.y_all.nbytes) / 2**20
        print(f"read + visible split: {read:.2f} s ({len(task.y_all):,} rows, {len(task.y):,} visible)")
        print(f"exact oracle build:   {build:.2f} s ({oracle_size:,} distinct designs)")
        print(f"score 128 designs:    {score * 1e3:.2f} ms")
        print(f"peak RSS {rss:.0f} MiB (before loading {rss0:.0f} MiB; the arrays themselves {data_mb:.0f} MiB)")


if __name__ == "__main__":
    main()
