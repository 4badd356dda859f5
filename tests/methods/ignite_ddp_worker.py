"""Entry point of the IGNITE DDP test (tests/methods/test_ignite_ddp.py).

Trains a small IGNITE surrogate on TFBind8 with Lightning on CPU, either in one process or
with ``strategy="ddp"`` (gloo) on several processes, and saves the λ trajectory and the final
weights of every rank. Lightning's DDP launcher re-executes this script once per extra rank,
which is why it is a script and not a pytest function::

    python tests/methods/ignite_ddp_worker.py --devices 2 --out DIR --cases finite_difference exact

writes ``DIR/<case>/rank<r>.pt`` for each case in :data:`CASES`, one fit after the other in
the same process group (the processes are launched once for all cases).
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_mbo.cli import MBOTrainer
from lightning_mbo.data import MBODataModule
from lightning_mbo.methods import Ignite, Surrogate

#: Global batch 128 (64 per rank with 2 processes).
BATCH_SIZE = 128
HIDDEN = (32, 32)
MEMBERS = 2
EPOCHS = 2
SEED = 0

#: case -> (grad_mode, max_samples, drop_last). The even cases keep 1800 training rows (200 are
#: held out for validation) = 14 full batches, drop_last; "uneven" keeps 1793 rows = 14 full
#: batches and a last batch of 1 row, which 2 ranks split 1 / 0.
CASES: dict[str, tuple[str, int, bool]] = {
    "finite_difference": ("finite_difference", 2000, True),
    "exact": ("exact", 2000, True),
    "uneven": ("finite_difference", 1993, False),
    # embedding members (integer designs), IGNITE's released per-lookup norm across ranks
    "embedding": ("finite_difference", 2000, True),
}


def ignite_settings(grad_mode: str) -> Ignite:
    # A large dual step so that λ moves visibly and the penalty shapes the weights in 28 steps.
    return Ignite(lambda_lr=1.0, grad_mode=grad_mode)


class RecordLambda(pl.Callback):
    """λ of every member after every optimizer step, as a ``(steps, M)`` float64 tensor."""

    def __init__(self) -> None:
        self.lambdas: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lambdas.append(pl_module.constraint.lmbda.detach().double().cpu().clone())


def train(devices: int, out: str | os.PathLike, case: str = "finite_difference") -> None:
    """Train one case and write ``out/rank<r>.pt`` (``lambdas``, ``state_dict``, ``world_size``,
    ``batches_per_epoch``)."""
    grad_mode, max_samples, drop_last = CASES[case]
    embedding = {"encoding": "integers", "normalize_x": False} if case == "embedding" else {}
    dm = MBODataModule(max_samples=max_samples, batch_size=BATCH_SIZE, seed=SEED, drop_last=drop_last, **embedding)
    pl.seed_everything(SEED, verbose=False)
    model = Surrogate(dm.input_dim, members=MEMBERS, hidden=HIDDEN, ignite=ignite_settings(grad_mode),
                      embedding=[4, 8] if embedding else None)
    record = RecordLambda()
    kwargs = {"strategy": "ddp"} if devices > 1 else {}
    trainer = MBOTrainer(
        accelerator="cpu",
        devices=devices,
        max_epochs=EPOCHS,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[record],
        **kwargs,
    )
    trainer.fit(model, datamodule=dm)
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "lambdas": torch.stack(record.lambdas),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "world_size": trainer.world_size,
            "batches_per_epoch": trainer.num_training_batches,
        },
        Path(out) / f"rank{trainer.global_rank}.pt",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", nargs="+", default=["finite_difference"], choices=list(CASES))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # 2 ranks on a 2-core machine: no intra-op threads
    for case in args.cases:
        train(args.devices, Path(args.out) / case, case)


if __name__ == "__main__":
    main()
