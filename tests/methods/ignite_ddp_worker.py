"""Entry point of the IGNITE DDP test (tests/methods/test_ignite_ddp.py).

Trains a small IGNITE surrogate on TFBind8 with Lightning on CPU, either in one process or
with ``strategy="ddp"`` (gloo) on several processes, and saves the λ trajectory and the final
weights of every rank to ``<out>/rank<r>.pt``. Lightning's DDP launcher re-executes this
script once per extra rank, which is why it is a script and not a pytest function.

    python tests/methods/ignite_ddp_worker.py --devices 2 --out DIR --grad-modes finite_difference exact

writes ``DIR/<grad mode>/rank<r>.pt`` for each mode, one fit after the other in the same
process group (one launch of the processes for all modes).
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_mbo.data import MBODataModule
from lightning_mbo.methods import Ignite, Surrogate

#: Global batch 128 (64 per rank with 2 processes); drop_last so that every batch splits evenly.
BATCH_SIZE = 128
MAX_SAMPLES = 2000
HIDDEN = (32, 32)
MEMBERS = 2
EPOCHS = 2
SEED = 0


def ignite_settings(grad_mode: str) -> Ignite:
    # A large dual step so that λ moves visibly and the penalty shapes the weights in 28 steps.
    return Ignite(lambda_lr=1.0, grad_mode=grad_mode)


class RecordLambda(pl.Callback):
    """λ of every member after every optimizer step, as a ``(steps, M)`` float64 tensor."""

    def __init__(self) -> None:
        self.lambdas: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lambdas.append(pl_module.constraint.lmbda.detach().double().cpu().clone())


def train(devices: int, out: str | os.PathLike, grad_mode: str = "finite_difference") -> None:
    """Train and write ``out/rank<r>.pt`` with ``lambdas``, ``state_dict`` and ``world_size``."""
    dm = MBODataModule(max_samples=MAX_SAMPLES, batch_size=BATCH_SIZE, seed=SEED, drop_last=True)
    pl.seed_everything(SEED, verbose=False)
    model = Surrogate(dm.input_dim, members=MEMBERS, hidden=HIDDEN, ignite=ignite_settings(grad_mode))
    record = RecordLambda()
    kwargs = {"strategy": "ddp"} if devices > 1 else {}
    trainer = pl.Trainer(
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
    parser.add_argument("--grad-modes", nargs="+", default=["finite_difference"],
                        choices=["finite_difference", "exact"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # 2 ranks on a 2-core machine: no intra-op threads
    for mode in args.grad_modes:
        train(args.devices, Path(args.out) / mode, mode)


if __name__ == "__main__":
    main()
