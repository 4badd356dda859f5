"""Run-to-run noise of a search on ONE fixed surrogate: how much of a table's spread is the
search's own, not the surrogate's.

Trains the CMA-ES surrogate of configs/tfbind8/cma_es.yaml once (5 members of one hidden layer of
256, leaky ReLU, Gaussian head, NLL, Adam 1e-3 with Keras' epsilon 1e-7, batch 100, 200 rows held
out, each member on its own bootstrap resample; ``--epochs``, released 100), then reruns CMA-ES at
its released settings (one strategy per top-128 design, σ0 0.5, at most 100 iterations) ``--reruns``
times with different search seeds on that one ensemble, and prints each rerun's 100th/80th/50th
percentile of the 128 normalised oracle scores, their spread, and what the strategies did (stop
reasons, iterations, distance from the start).

    python benchmarks/search_noise.py                      # ~5-8 minutes on one CPU core
    python benchmarks/search_noise.py --epochs 20 --reruns 3
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

from _common import device_line, load_line, quiet_lightning, versions_line

quiet_lightning()

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from lightning_mbo.cli import MBOTrainer  # noqa: E402
from lightning_mbo.data import MBODataModule  # noqa: E402
from lightning_mbo.functional.metrics import score_percentiles  # noqa: E402
from lightning_mbo.methods import Surrogate  # noqa: E402
from lightning_mbo.search import CMAES  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=100, help="surrogate training epochs (released: 100)")
    p.add_argument("--reruns", type=int, default=5, help="searches on the one surrogate (default 5)")
    p.add_argument("--seed", type=int, default=0, help="the surrogate's seed (the searches use 0 .. reruns-1)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(device_line(torch.device("cpu")), "|", load_line(), "|", versions_line())

    pl.seed_everything(args.seed, verbose=False)
    dm = MBODataModule(task="TFBind8-Exact-v0", batch_size=100, val_size=200, bootstrap=True, seed=args.seed)
    model = Surrogate(dm.input_dim, members=5, hidden=(256,), lr=1e-3, aggregate="mean", adam_eps=1e-7)
    start = time.perf_counter()
    MBOTrainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(model, datamodule=dm)
    fit_s = time.perf_counter() - start
    model.eval()
    data = dm.search_data()
    x0 = dm.starting_designs(128)
    ids = torch.arange(128)
    score = model.search_objective(x0, data, ids, 128).score
    print(f"TFBind8; surrogate 5 x [256] (configs/tfbind8/cma_es.yaml), trained {args.epochs} epochs "
          f"(released: 100) in {fit_s:.0f} s, seed {args.seed}; CMA-ES at its released settings, "
          f"{args.reruns} search seeds on that one surrogate; torch threads {torch.get_num_threads()}")
    print(f"{'search seed':>11} {'100th':>7} {'80th':>7} {'50th':>7} {'pred. mean':>10} {'wall s':>7}  what the "
          "strategies did")
    rows = []
    for seed in range(args.reruns):
        start = time.perf_counter()
        result = CMAES().search(x0, score, data, ids, 128, seed=seed)
        wall = time.perf_counter() - start
        scores = score_percentiles(dm.normalize_score(dm.score(dm.decode(result.x))))
        with torch.no_grad():
            predicted = float(dm.denormalize_y(score(result.x)).mean())
        d = result.diagnostics
        stops = ", ".join(f"{n} {reason}" for reason, n in collections.Counter(d["stop"]).most_common())
        did = (f"{stops}; {min(d['iterations'])}-{max(d['iterations'])} iterations; "
               f"{np.median(d['distance_from_start']):,.0f} z-units from the start (median; data max |z| "
               f"{d['data_max_abs_z']:.1f})")
        rows.append(scores)
        print(f"{seed:>11} {scores['score_100th']:>7.3f} {scores['score_80th']:>7.3f} {scores['score_50th']:>7.3f} "
              f"{predicted:>10.3g} {wall:>7.0f}  {did}")
    for key in ("score_100th", "score_80th", "score_50th"):
        values = [r[key] for r in rows]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{key[6:]:>5} percentile over {len(values)} search seeds: {min(values):.3f}-{max(values):.3f} "
              f"(mean {statistics.mean(values):.3f}, std {sd:.3f})")
    print(load_line())


if __name__ == "__main__":
    main()
