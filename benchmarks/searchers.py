"""Wall time of each design optimizer for 128 candidates, next to gradient ascent's, on the same
trained surrogate, on this machine, in one run.

The surrogate is the searchers' released one (5 members of one hidden layer of 256, leaky ReLU,
Gaussian head; Adam 1e-3, batch 100) on TFBind8, trained for ``--epochs`` epochs (the search cost
does not depend on how long it trained). Each searcher runs at its released settings (CMA-ES: 100
iterations from each of the 128 starts; REINFORCE: 200 updates of 256 samples; BO-qEI: 10 rounds of
qEI with q = 32 from the top-500; gradient ascent: 200 steps) on the ensemble mean.

    python benchmarks/searchers.py            # about 3-5 minutes on 2 CPU cores, most of it BO-qEI
    python benchmarks/searchers.py --skip bo_qei
"""

from __future__ import annotations

import argparse
import time

from _common import device_line, load_line, quiet_lightning, versions_line

quiet_lightning()

import torch  # noqa: E402

from lightning_mbo.cli import MBOTrainer  # noqa: E402
from lightning_mbo.data import MBODataModule  # noqa: E402
from lightning_mbo.methods import Surrogate  # noqa: E402
from lightning_mbo.search import CMAES, BOqEI, Reinforce, gradient_ascent  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="surrogate training epochs (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--skip", nargs="*", default=[], choices=["cma_es", "reinforce", "bo_qei"])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dm = MBODataModule(batch_size=100, seed=0)
    model = Surrogate(dm.input_dim, members=5, hidden=(256,), lr=1e-3)
    MBOTrainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
               num_sanity_val_steps=0).fit(model, datamodule=dm)
    model.eval()
    data = dm.search_data()
    x0 = dm.starting_designs(128)
    ids = torch.arange(128)
    score = model.search_objective(x0, data, ids, 128).score
    runs = {
        "gradient ascent (200 steps)": lambda: gradient_ascent(x0, score, 200, model.search_defaults(data).lr),
        "cma_es (100 iterations)": lambda: CMAES().search(x0, score, data, ids, 128, seed=0),
        "reinforce (200 x 256)": lambda: Reinforce().search(x0, score, data, ids, 128, seed=0),
        "bo_qei (10 rounds x 32)": lambda: BOqEI().search(x0, score, data, ids, 128, seed=0),
    }
    print(device_line(torch.device("cpu")), "|", load_line(), "|", versions_line())
    print(f"TFBind8, 128 candidates, surrogate 5 x [256] trained {args.epochs} epochs; torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'searcher':<30} {'wall s':>9} {'x gradient ascent':>18} {'mean predicted':>15}")
    base = None
    for name, run in runs.items():
        if name.split(" ")[0] in args.skip:
            continue
        start = time.perf_counter()
        result = run()
        wall = time.perf_counter() - start
        base = base or wall
        with torch.no_grad():
            predicted = float(score(result.x).mean())
        print(f"{name:<30} {wall:>9.2f} {wall / base:>18.1f} {predicted:>15.3f}")


if __name__ == "__main__":
    main()
